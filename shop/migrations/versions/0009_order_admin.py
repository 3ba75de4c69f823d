"""Back office orders: indexes for the order list's filters and the CSV export

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 09:00:00

The order list pages newest first by (created_at, id) within a status or a date range, and
finds orders by an address or its beginning (the guest's ``orders.email`` or the account's
``users.email``); the export reads a date range in (created_at, id) order without sorting.
The address indexes use ``varchar_pattern_ops`` so ``LIKE 'ann%'`` can use them under any
collation (they serve equality too).
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PATTERN = {"email": "varchar_pattern_ops"}


def upgrade() -> None:
    op.create_index("ix_orders_status_created_at_id", "orders", ["status", "created_at", "id"])
    op.create_index("ix_orders_created_at_id", "orders", ["created_at", "id"])
    op.create_index("ix_orders_email", "orders", ["email"], postgresql_ops=_PATTERN)
    op.create_index("ix_users_email", "users", ["email"], postgresql_ops=_PATTERN)


def downgrade() -> None:
    op.drop_index("ix_users_email", table_name="users")
    op.drop_index("ix_orders_email", table_name="orders")
    op.drop_index("ix_orders_created_at_id", table_name="orders")
    op.drop_index("ix_orders_status_created_at_id", table_name="orders")
