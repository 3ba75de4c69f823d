"""The HTTP side: blueprints by capability, plus the plumbing they share."""

from __future__ import annotations

import datetime

from flask import Flask

from ..catalogue import stock_state
from ..order_lifecycle import LABELS as STATUS_LABELS
from ..order_mail import money_text
from ..password_policy import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from .cached_pages import account_nav
from .context import cart_count, csrf_token, current_user, services, shows_back_office
from .converters import IdConverter
from .errors import register_error_handlers
from .middleware import register_middleware
from .static_assets import register_static_assets


def format_money(cents: int) -> str:
    """Integer cents to '12.34 EUR' style text, with the configured currency."""
    return money_text(cents, services().settings.currency)


def format_time(timestamp: float) -> str:
    """Seconds since the epoch as UTC text a person reads ("2026-12-02 16:05 UTC")."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def register(app: Flask) -> None:
    from . import (
        account,
        account_sessions,
        admin,
        api,
        cart,
        catalogue,
        checkout,
        credentials,
        images,
        ops,
        payments,
    )

    app.url_map.converters["id"] = IdConverter
    register_middleware(app, app.extensions["shop"].settings)
    register_error_handlers(app)
    register_static_assets(app)
    blueprints = (
        catalogue.bp,
        cart.bp,
        account.bp,
        credentials.bp,
        account_sessions.bp,
        checkout.bp,
        payments.bp,
        api.bp,
        admin.bp,
        images.bp,
    )
    for blueprint in (*blueprints, ops.bp):
        app.register_blueprint(blueprint)
    app.jinja_env.filters["money"] = format_money
    app.jinja_env.filters["stock_state"] = stock_state
    app.jinja_env.filters["isotime"] = format_time
    app.jinja_env.filters["status_label"] = lambda status: STATUS_LABELS.get(status, status)
    app.jinja_env.globals.update(
        added_to_cart=cart.added_to_cart,
        account_nav=account_nav,
        csrf_token=csrf_token,
        cart_count=cart_count,
        current_user=current_user,
        shows_back_office=shows_back_office,
        image_url=images.image_url,
        image_srcset=images.srcset,
        image_src=images.src_variant,
        min_password_length=MIN_PASSWORD_LENGTH,
        max_password_length=MAX_PASSWORD_LENGTH,
        # The forms' max comes from the cart's rule, not from a number in a template.
        max_line_quantity=app.extensions["shop"].carts.max_line_quantity,
    )
