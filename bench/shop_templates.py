"""What the shop's templates need from an app that is not the shop: its folders, its filters,
its globals and every endpoint they link to, so the ceiling and the conventional build render
the very same pages.

The filters are copies of the shop's (``shop/web/__init__.py``, ``shop/catalogue.py``): plain
functions, no services behind them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Flask, abort, request
from markupsafe import Markup

from shop.catalogue import stock_state  # the shop's own filter: the same text, the same cost

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
STATIC = REPO / "static"
PER_PAGE = 24


def money(cents: int) -> str:
    """The shop's ``money`` filter with its default currency (EUR)."""
    sign = "-" if cents < 0 else ""
    cents = abs(int(cents))
    return f"{sign}€{cents // 100:,}.{cents % 100:02d}"


def _not_benchmarked():
    abort(404)


def _stub_blueprint(name: str, rules: list[tuple[str, str, list[str]]], **kwargs) -> Blueprint:
    bp = Blueprint(name, __name__, **kwargs)
    for rule, endpoint, methods in rules:
        bp.add_url_rule(rule, endpoint, _not_benchmarked, methods=methods)
    return bp


def flask_app(import_name: str) -> Flask:
    """A Flask app with the shop's template and static folders."""
    return Flask(import_name, template_folder=str(TEMPLATES), static_folder=str(STATIC))


def register_page_support(
    app: Flask,
    *,
    csrf_token: Callable[[], str],
    cart_count: Callable[[], int | None],
    current_user: Callable[[], dict | None],
    cart_add: Callable | None = None,
) -> None:
    """Filters, globals, and the endpoints the templates link to (the same URLs as the shop's;
    those outside the benchmark answer 404). ``cart_add`` serves ``POST /cart/add`` if given."""
    app.jinja_env.filters["money"] = money
    app.jinja_env.filters["stock_state"] = stock_state

    def account_nav() -> Markup:
        """The shop's header links (its ``_account_nav.html``), rendered per request."""
        template = app.jinja_env.get_template("_account_nav.html")
        nav = template.render(count=cart_count(), user=current_user(), back_office=False)
        return Markup(nav)

    app.jinja_env.globals.update(
        csrf_token=csrf_token,
        cart_count=cart_count,
        current_user=current_user,
        account_nav=account_nav,
        added_to_cart=lambda: None,  # the notice after an add: not part of the benchmark
    )

    @app.context_processor
    def page_links() -> dict:
        """What the shop's catalogue views pass (from their canonical query): the page's own
        URL for the add forms' ``next``, and the pager's arguments."""
        return {
            "next_url": request.full_path.rstrip("?"),
            "link_args": {"category": request.args.get("category") or None},
        }

    cart = Blueprint("cart", __name__, url_prefix="/cart")
    cart.add_url_rule("", "view", _not_benchmarked, methods=["GET"])
    cart.add_url_rule("/add", "add", cart_add or _not_benchmarked, methods=["POST"])
    app.register_blueprint(cart)
    app.register_blueprint(
        _stub_blueprint(
            "account",
            [
                ("/register", "register_page", ["GET", "POST"]),
                ("/login", "login", ["GET", "POST"]),
                ("/logout", "logout", ["POST"]),
            ],
        )
    )
    app.register_blueprint(
        _stub_blueprint(
            "checkout",
            [("/checkout", "checkout", ["GET", "POST"]), ("/orders", "orders", ["GET"])],
        )
    )


def last_page(total: int, per_page: int = PER_PAGE) -> int:
    return max(1, -(-total // per_page))
