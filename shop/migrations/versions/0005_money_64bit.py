"""Money in 64-bit integers: prices, order totals and order lines

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 21:55:00

INTEGER tops out at 21,474,836.47 in cents: three items at 10,000,000.00 made a checkout fail
and the product command accepted prices the column then refused. PostgreSQL rewrites the two
tables once (ALTER ... TYPE BIGINT); SQLite's INTEGER already holds 64 bits, so nothing changes
there.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MONEY = {
    "products": ["price_cents"],
    "orders": ["total_cents"],
    "order_lines": ["unit_price_cents", "line_total_cents"],
}


def _retype(old: type[sa.Integer], new: type[sa.Integer]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # dynamically typed: every INTEGER is already up to 64 bits
    for table, columns in MONEY.items():
        for column in columns:
            op.alter_column(
                table, column, type_=new(), existing_type=old(), existing_nullable=False
            )


def upgrade() -> None:
    _retype(sa.Integer, sa.BigInteger)


def downgrade() -> None:
    # Fails, changing nothing, if an amount no longer fits in INTEGER.
    _retype(sa.BigInteger, sa.Integer)
