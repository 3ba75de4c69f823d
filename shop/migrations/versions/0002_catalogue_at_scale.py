"""Catalogue at scale: per-category product counts and full-text search

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:20:00

A grid page must not count the whole table on a cache miss: categories carry their product
count, kept by the code that adds or moves products. On PostgreSQL, search uses a generated
tsvector column with a GIN index instead of a scan with ILIKE.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("categories") as batch:
        batch.add_column(
            sa.Column("product_count", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE categories SET product_count = "
        "(SELECT count(*) FROM products WHERE products.category_id = categories.id)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE products ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
            "(to_tsvector('simple', name || ' ' || description)) STORED"
        )
        op.execute(
            "CREATE INDEX ix_products_search_vector ON products USING gin (search_vector)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_products_search_vector")
        op.execute("ALTER TABLE products DROP COLUMN search_vector")
    with op.batch_alter_table("categories") as batch:
        batch.drop_column("product_count")
