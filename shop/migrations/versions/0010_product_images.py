"""Product images: stored variants (image_blobs) and each product's pictures (product_images)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 09:00:00

``image_blobs`` holds the database store's variants, keyed by the SHA-256 of their bytes
(PostgreSQL ``bytea``); ``product_images`` lists a product's pictures in order with their alt
text and variants (JSON). Both are new and empty: nothing existing changes.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_blobs",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(40), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_image_blobs")),
    )
    op.create_table(
        "product_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("alt", sa.String(200), nullable=False),
        sa.Column("variants", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_product_images_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product_images")),
    )
    op.create_index(
        op.f("ix_product_images_product_id_position"), "product_images", ["product_id", "position"]
    )


def downgrade() -> None:
    op.drop_table("product_images")
    op.drop_table("image_blobs")
