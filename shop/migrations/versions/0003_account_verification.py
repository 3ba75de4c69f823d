"""Accounts: when the address was verified and when the password last changed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 16:20:00

Both columns are NULL for existing accounts: their addresses count as unverified until their
owners follow a verification link (they can ask for one on the account page).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_changed_at")
        batch.drop_column("email_verified_at")
