"""Back office: staff roles, archived and versioned products, category order, audit, stock log

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:00:00

Users gain a role (every existing account is a customer; ``flask --app shop user grant`` makes
the first admin). Products gain ``archived_at``, an optimistic ``version`` and a low-stock
threshold; categories a position. Two new tables: ``audit_log`` (on PostgreSQL a trigger
refuses UPDATE and DELETE on it) and ``stock_adjustments``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_REFUSE_CHANGES = """
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
"""


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("role", sa.String(20), server_default="customer", nullable=False)
        )
        batch.create_check_constraint(op.f("ck_users_role_known"), "role IN ('customer', 'staff', 'admin')")
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("low_stock_threshold", sa.Integer(), nullable=True))
    with op.batch_alter_table("categories") as batch:
        batch.add_column(sa.Column("position", sa.Integer(), server_default="0", nullable=False))
    # Today's order (by name) becomes the first positions.
    op.execute(
        "UPDATE categories SET position = (SELECT COUNT(*) FROM categories AS c "
        "WHERE c.name < categories.name OR (c.name = categories.name AND c.id < categories.id))"
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("actor", sa.String(254), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("entity", sa.String(40), nullable=False),
        sa.Column("entity_id", sa.String(80), nullable=True),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_log_entity_entity_id_id", "audit_log", ["entity", "entity_id", "id"])
    op.create_index("ix_audit_log_actor_id_id", "audit_log", ["actor_id", "id"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "stock_adjustments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("change", sa.Integer(), nullable=False),
        sa.Column("stock_after", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("actor_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_stock_adjustments_product_id_id", "stock_adjustments", ["product_id", "id"]
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_REFUSE_CHANGES)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_is_append_only()")
    op.drop_table("stock_adjustments")
    op.drop_table("audit_log")
    with op.batch_alter_table("categories") as batch:
        batch.drop_column("position")
    with op.batch_alter_table("products") as batch:
        batch.drop_column("low_stock_threshold")
        batch.drop_column("version")
        batch.drop_column("archived_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role_known"), type_="check")
        batch.drop_column("role")
