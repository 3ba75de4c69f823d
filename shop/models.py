"""The relational schema (SQLAlchemy Core). Alembic migrations are written against it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Ids that fit PostgreSQL's INTEGER; anything larger is "no such thing", never an error.
# On PostgreSQL, products also has ``search_vector`` (a generated tsvector with a GIN index,
# migration 0002); it is not mapped here because SQLite has no equivalent.
SEARCH_VECTOR = "search_vector"
MAX_ID = 2**31 - 1
# Money columns are BIGINT (migration 0005): 3 x 10,000,000.00 overflowed INTEGER at checkout.

categories = Table(
    "categories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(80), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    # Kept by the code that adds, moves, archives or restores products (catalogue.save_product,
    # shop.catalogue_admin, seed), so that a grid page never counts the products table. Archived
    # products are not counted.
    Column("product_count", Integer, nullable=False, server_default="0"),
    # Where the category stands in the shop's category bar (the back office reorders them).
    Column("position", Integer, nullable=False, server_default="0"),
)

products = Table(
    "products",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("category_id", Integer, ForeignKey("categories.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("price_cents", BigInteger, nullable=False),
    Column("stock", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Set when the back office archives the product: gone from the shop, kept on past orders.
    Column("archived_at", DateTime(timezone=True), nullable=True),
    # Raised by every back-office edit: a form saved over a newer version is refused
    # (optimistic locking), so of two staff editing one product the later save cannot
    # silently undo the earlier.
    Column("version", Integer, nullable=False, server_default="1"),
    # Below this the low-stock report lists the product (NULL: SHOP_LOW_STOCK_DEFAULT).
    Column("low_stock_threshold", Integer, nullable=True),
    CheckConstraint("stock >= 0", name="stock_not_negative"),
    CheckConstraint("price_cents >= 0", name="price_not_negative"),
    Index(None, "category_id", "id"),
    # The back office's product list, a keyset page per sort (migration 0008).
    Index(None, "name", "id"),
    Index(None, "price_cents", "id"),
    Index(None, "stock", "id"),
    Index(None, "updated_at", "id"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # NULL until the owner of the address follows a link mailed to it (migration 0003).
    Column("email_verified_at", DateTime(timezone=True), nullable=True),
    # NULL until the first change or reset after registration.
    Column("password_changed_at", DateTime(timezone=True), nullable=True),
    # customer, staff or admin (shop/staff.py); /admin is for staff and admins only.
    Column("role", String(20), nullable=False, server_default="customer"),
    CheckConstraint("role IN ('customer', 'staff', 'admin')", name="role_known"),
    # The back office finds an account's orders by the beginning of its address (0009).
    Index(None, "email", postgresql_ops={"email": "varchar_pattern_ops"}),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    # NULL for a guest's order until the guest signs in from the browser that placed it.
    Column("user_id", Integer, ForeignKey("users.id"), nullable=True),
    # Whose submits an idempotency key is scoped to: "u:<user id>" or "s:<session ref>" (a
    # guest), as the cart's owner is named (shop.cart.CartOwner). Migration 0004.
    Column("owner_key", String(80), nullable=False),
    Column("status", String(20), nullable=False, server_default="pending_payment"),
    Column("total_cents", BigInteger, nullable=False),
    Column("email", String(254), nullable=True),
    Column("shipping_name", String(200), nullable=False),
    Column("shipping_address", Text, nullable=False),
    Column("idempotency_key", String(100), nullable=False),
    # SHA-256 of what the submit asked for: the same key with another body is refused (422).
    Column("request_hash", String(64), nullable=True),
    # SHA-256 of the cart's lines: one pending order per (owner, cart), see the index below.
    Column("cart_hash", String(64), nullable=True),
    # SHA-256 of the access link's token (a guest sees the order through it).
    Column("access_token_hash", String(64), nullable=True, unique=True),
    Column("hold_expires_at", DateTime(timezone=True), nullable=True),
    Column("payment_ref", String(300), nullable=True),
    Column("payment_url", Text, nullable=True),
    Column("tracking", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # One order per (owner, key): the database, not the app, refuses a duplicate checkout.
    UniqueConstraint("owner_key", "idempotency_key"),
    Index(None, "user_id", "id"),
    Index(None, "status", "hold_expires_at"),
    # The back office's order list and export (migration 0009): newest first (created_at,
    # id), within a status or a date range, and by an address or its beginning (LIKE 'ann%'
    # uses a pattern-ops index whatever the database's collation).
    Index(None, "status", "created_at", "id"),
    Index(None, "created_at", "id"),
    Index(None, "email", postgresql_ops={"email": "varchar_pattern_ops"}),
    # One cart, one order: concurrent checkouts of the same cart under different keys cannot
    # both leave an order waiting for payment.
    Index(
        "uq_orders_pending_cart",
        "owner_key",
        "cart_hash",
        unique=True,
        postgresql_where=text("status = 'pending_payment'"),
        sqlite_where=text("status = 'pending_payment'"),
    ),
)

# Every status an order took, with its time: the history a shopper sees on the order page.
order_events = Table(
    "order_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("note", String(300), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Payment notifications already applied, by the provider's event id: a replay changes nothing.
payment_events = Table(
    "payment_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("provider", String(40), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("provider", "event_id"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False, index=True),
    Column("product_id", Integer, ForeignKey("products.id"), nullable=False),
    Column("product_name", String(200), nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("line_total_cents", BigInteger, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
)

# Mail written in the same transaction as what it reports (an order paid, shipped) and
# delivered afterwards by a worker (shop/outbox.py), so an SMTP outage delays mail, never
# loses it. ``status`` is pending -> sending -> sent, or failed after the last attempt;
# ``next_attempt_at`` is when a pending row is due, or when a sending row's claim lapses (its
# worker died mid-send) and the row is due again. ``message_key`` makes the Message-ID, the
# same on every attempt.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_key", String(64), nullable=False, unique=True),
    Column("kind", String(40), nullable=False),
    Column("recipient", String(254), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("body_text", Text, nullable=False),
    Column("body_html", Text, nullable=True),
    Column("status", String(10), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", String(500), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="status_known"),
    Index(None, "status", "next_attempt_at"),
)

# Every back-office change (and every role granted from the command line): who, when, what,
# before and after, written in the transaction of the change (shop/audit.py). Nothing in the
# shop updates or deletes a row; on PostgreSQL a trigger refuses it (migration 0007).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    # NULL for the command line; the address is kept as it was when the change was made.
    Column("actor_id", Integer, ForeignKey("users.id"), nullable=True),
    Column("actor", String(254), nullable=False),
    Column("action", String(60), nullable=False),
    Column("entity", String(40), nullable=False),
    Column("entity_id", String(80), nullable=True),
    # JSON objects of the fields that changed, as they were and as they became.
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Index(None, "entity", "entity_id", "id"),
    Index(None, "actor_id", "id"),
    Index(None, "at"),
)

# Stock changed by hand in the back office, with the reason given (a count, damage, a return).
stock_adjustments = Table(
    "stock_adjustments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("product_id", Integer, ForeignKey("products.id"), nullable=False),
    Column("change", Integer, nullable=False),
    Column("stock_after", Integer, nullable=False),
    Column("reason", String(300), nullable=False),
    Column("actor_id", Integer, ForeignKey("users.id"), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Index(None, "product_id", "id"),
)

# Image variants by the SHA-256 of their bytes (shop/image_storage.py, the default store):
# written once, never updated; a variant may serve several products' images.
image_blobs = Table(
    "image_blobs",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("content_type", String(40), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A product's pictures in the order the shop shows them (the first is the grid's), with the
# text read out instead of each, and its variants as JSON: [{"width", "height", "hash",
# "type"}, ...] narrowest first, each the key of a stored variant (shop/images.py).
product_images = Table(
    "product_images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("product_id", Integer, ForeignKey("products.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("alt", String(200), nullable=False),
    Column("variants", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index(None, "product_id", "position"),
)
