"""Catalogue in the back office: an index per sort of the staff's product list

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 09:00:00

The back office lists products by name, price, stock or last change, a page at a time with
keyset pagination on (sort column, id). Each of these indexes lets a page be read by walking
it from the cursor, at 1,000,000 products as at 100, instead of sorting the table. (By id, the
primary key serves.) Category counts are recomputed to leave out archived products.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SORTS = ("name", "price_cents", "stock", "updated_at")


def upgrade() -> None:
    for column in SORTS:
        op.create_index(f"ix_products_{column}_id", "products", [column, "id"])
    op.execute(
        "UPDATE categories SET product_count = (SELECT count(*) FROM products "
        "WHERE products.category_id = categories.id AND products.archived_at IS NULL)"
    )


def downgrade() -> None:
    for column in SORTS:
        op.drop_index(f"ix_products_{column}_id", table_name="products")
