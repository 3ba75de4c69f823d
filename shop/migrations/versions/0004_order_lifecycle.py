"""Order life cycle: guests, payment holds, an order history, applied payment notifications

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 21:45:00

Orders gain an owner key ("u:<user id>", or "s:<session ref>" for a guest, whose user_id is
NULL), and idempotency keys become unique per owner. Existing orders keep their status
"placed" (taken before payments existed; they can still be shipped or cancelled) and get one
history row at their creation time.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending_payment'")


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("owner_key", sa.String(80), nullable=True))
        batch.add_column(sa.Column("email", sa.String(254), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("cart_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("access_token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hold_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("payment_ref", sa.String(300), nullable=True))
        batch.add_column(sa.Column("payment_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tracking", sa.String(200), nullable=True))
    op.execute("UPDATE orders SET owner_key = 'u:' || CAST(user_id AS VARCHAR(20))")
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("owner_key", existing_type=sa.String(80), nullable=False)
        batch.alter_column("user_id", existing_type=sa.Integer(), nullable=True)
        batch.alter_column(
            "status",
            existing_type=sa.String(20),
            existing_nullable=False,
            server_default="pending_payment",
        )
        batch.drop_constraint("uq_orders_user_id_idempotency_key", type_="unique")
        batch.create_unique_constraint(
            "uq_orders_owner_key_idempotency_key", ["owner_key", "idempotency_key"]
        )
        batch.create_unique_constraint("uq_orders_access_token_hash", ["access_token_hash"])
    op.create_index("ix_orders_status_hold_expires_at", "orders", ["status", "hold_expires_at"])
    op.create_index(
        "uq_orders_pending_cart",
        "orders",
        ["owner_key", "cart_hash"],
        unique=True,
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_table(
        "order_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("note", sa.String(300), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_order_events_order_id", "order_events", ["order_id"])
    op.execute(
        "INSERT INTO order_events (order_id, status, note, at) "
        "SELECT id, status, NULL, created_at FROM orders"
    )
    op.create_table(
        "payment_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("orders.id"), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("provider", "event_id", name="uq_payment_events_provider_event_id"),
    )


def downgrade() -> None:
    """Back to accounts-only orders: guests' orders (no user) cannot be kept and are refused."""
    op.drop_table("payment_events")
    op.drop_index("ix_order_events_order_id", table_name="order_events")
    op.drop_table("order_events")
    op.drop_index("uq_orders_pending_cart", table_name="orders")
    op.drop_index("ix_orders_status_hold_expires_at", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint("uq_orders_access_token_hash", type_="unique")
        batch.drop_constraint("uq_orders_owner_key_idempotency_key", type_="unique")
        batch.create_unique_constraint(
            "uq_orders_user_id_idempotency_key", ["user_id", "idempotency_key"]
        )
        batch.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column(
            "status", existing_type=sa.String(20), existing_nullable=False, server_default="placed"
        )
        for column in (
            "tracking",
            "payment_url",
            "payment_ref",
            "hold_expires_at",
            "access_token_hash",
            "cart_hash",
            "request_hash",
            "email",
            "owner_key",
        ):
            batch.drop_column(column)
