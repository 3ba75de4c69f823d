"""The conventional build: the shop's pages made the way most Flask shops make them.

Flask-Session keeps a session in Redis for every visitor (the CSRF token lives in it, so the
first page a visitor sees creates one, and every request saves it again), and every page asks
the primary: the categories, the page of products with a count (OFFSET pagination), the product
by id. No cache. Same templates, same filters, same URLs as the shop.

``gunicorn 'bench.conventional:create_app()' -c gunicorn.conf.py`` with ``BENCH_DATABASE_URL``,
``BENCH_REDIS_URL`` and ``BENCH_SECRET_KEY``. ``BENCH_INSTRUMENT=1`` adds an ``X-Bench-SQL``
header (statements this request ran) and ``X-Bench-Redis`` (Redis commands it sent), for
sampling outside the timed runs.
"""

from __future__ import annotations

import os
import secrets
import threading

import redis
from flask import Blueprint, Flask, abort, g, redirect, render_template, request, session
from flask_session import Session
from sqlalchemy import create_engine, event, text

from .shop_templates import PER_PAGE, flask_app, last_page, register_page_support

_PRODUCT = (
    "SELECT p.id, p.name, p.description, p.price_cents, p.stock, c.slug AS category "
    "FROM products p JOIN categories c ON c.id = p.category_id"
)


def _csrf_token() -> str:
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    return session["csrf_token"]


def _cart_count() -> int:
    return sum(session.get("cart", {}).values())


class _CountingRedis(redis.Redis):
    counts: threading.local

    def execute_command(self, *args, **options):
        self.counts.redis = getattr(self.counts, "redis", 0) + 1
        return super().execute_command(*args, **options)


def create_app(
    database_url: str | None = None, redis_url: str | None = None, *, instrument: bool = False
) -> Flask:
    env = os.environ
    database_url = database_url or env["BENCH_DATABASE_URL"]
    redis_url = redis_url or env["BENCH_REDIS_URL"]
    instrument = instrument or env.get("BENCH_INSTRUMENT") == "1"
    counts = threading.local()
    app = flask_app(__name__)
    client = (_CountingRedis if instrument else redis.Redis).from_url(redis_url)
    client.counts = counts
    app.config.update(
        SECRET_KEY=env.get("BENCH_SECRET_KEY", "conventional-bench-secret-key"),
        SESSION_TYPE="redis",
        SESSION_REDIS=client,
        SESSION_KEY_PREFIX=env.get("BENCH_SESSION_PREFIX", "conv:session:"),
    )
    Session(app)
    engine = create_engine(database_url, pool_size=5, max_overflow=10)
    if instrument:

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*_args, **_kwargs):
            counts.n = getattr(counts, "n", 0) + 1

        inner = app.wsgi_app

        def counted(environ, start_response):
            # From before the session is opened until after it is saved, as the shop counts.
            counts.n = counts.redis = 0

            def start(status, headers, exc_info=None):
                headers.append(("X-Bench-SQL", str(counts.n)))
                headers.append(("X-Bench-Redis", str(counts.redis)))
                return start_response(status, headers, exc_info)

            return inner(environ, start)

        app.wsgi_app = counted

    def db():
        if "db" not in g:
            g.db = engine.connect()
        return g.db

    @app.teardown_appcontext
    def _close(_exc):
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    def categories() -> list[dict]:
        rows = db().execute(text("SELECT id, slug, name FROM categories ORDER BY name"))
        return [dict(row._mapping) for row in rows]

    def add_to_cart():
        # As the shop: a browser's Fetch Metadata vouches for its own pages' forms (which
        # carry no token); anything else needs the session's token.
        same_origin = request.headers.get("Sec-Fetch-Site") == "same-origin"
        if not same_origin and request.form.get("csrf_token") != session.get("csrf_token"):
            abort(403)
        product_id = request.form.get("product_id", type=int)
        quantity = request.form.get("quantity", 1, type=int)
        found = db().execute(text("SELECT stock FROM products WHERE id = :id"), {"id": product_id})
        stock = found.scalar()
        if stock is None:
            abort(404)
        cart = dict(session.get("cart", {}))
        cart[str(product_id)] = min(cart.get(str(product_id), 0) + quantity, stock, 99)
        session["cart"] = cart
        return redirect(request.form.get("next") or "/", code=303)

    register_page_support(
        app,
        csrf_token=_csrf_token,
        cart_count=_cart_count,
        current_user=lambda: None,
        cart_add=add_to_cart,
    )
    bp = Blueprint("catalogue", __name__)

    @bp.get("/")
    def grid():
        page = request.args.get("page", 1, type=int)
        slug = request.args.get("category") or None
        cats = categories()
        category = next((c for c in cats if c["slug"] == slug), None)
        if slug and category is None:
            abort(404)
        where, params = ("", {})
        if category:
            where, params = "WHERE p.category_id = :cid", {"cid": category["id"]}
        total = db().execute(text(f"SELECT count(*) FROM products p {where}"), params).scalar()
        rows = db().execute(
            text(f"{_PRODUCT} {where} ORDER BY p.id LIMIT :limit OFFSET :offset"),
            {**params, "limit": PER_PAGE, "offset": (page - 1) * PER_PAGE},
        )
        result = {
            "items": [dict(row._mapping) for row in rows],
            "page": page,
            "per_page": PER_PAGE,
            "total": total,
        }
        if page > 1 and not result["items"]:
            abort(404)
        return render_template(
            "catalogue/grid.html",
            result=result,
            pages=last_page(total),
            category=category,
            q="",
            categories=cats,
            error=None,
        )

    @bp.get("/products/<int:product_id>")
    def product(product_id: int):
        row = db().execute(text(f"{_PRODUCT} WHERE p.id = :id"), {"id": product_id}).first()
        if row is None:
            abort(404)
        return render_template(
            "catalogue/product.html",
            product=dict(row._mapping),
            categories=categories(),
            error=None,
        )

    app.register_blueprint(bp)
    return app
