"""The payment webhook, and the built-in test provider's hosted page (TEST MODE).

Neither carries the shop's CSRF token: the webhook is called by the provider, server to
server, and trusts only the notification's signature; the test provider's page stands in for a
provider's own site. The test provider notifies the shop by handing its signed notification to
the same rule the webhook runs (``receive_notification``), in process: that works under
``make run``, behind a balancer (no instance calls another) and in tests, while the signature
is still checked on the way in. ``"deliver": false`` in the API twin returns the notification
instead, for a client (or test) to POST to the webhook itself, later or twice.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, jsonify, redirect, render_template, request

from ..errors import InvalidInput
from ..payment_test_provider import OUTCOMES, TestProvider
from .context import services
from .inputs import json_body
from .ordering import receive_notification

bp = Blueprint("payments", __name__)


def csrf_exempt(view):
    view.csrf_exempt = True
    return view


@bp.post("/api/v1/payments/webhook/<provider>")
@csrf_exempt
def webhook(provider: str):
    applied = receive_notification(provider, dict(request.headers), request.get_data())
    return jsonify(
        {"order_id": applied.order_id, "status": applied.status, "changed": applied.changed}
    )


def _test_provider() -> TestProvider:
    provider = services().payment_providers["test"]
    assert isinstance(provider, TestProvider)
    return provider


@bp.get("/test-payments/<payment_id>")
def test_payment_page(payment_id: str):
    payment = _test_provider().payment(payment_id)
    return render_template("payments/test_page.html", payment=payment)


@bp.post("/test-payments/<payment_id>")
@csrf_exempt
def test_payment(payment_id: str):
    """Pay or decline: the form's buttons, or the API twin's ``{"outcome": ...}``."""
    provider = _test_provider()
    payment = provider.payment(payment_id)
    body = json_body() if request.is_json else request.form
    outcome = body.get("outcome")
    if outcome not in OUTCOMES:
        raise InvalidInput('The outcome must be "succeed" or "decline".', field="outcome")
    headers, notification = provider.notification(payment, outcome)
    deliver = not request.is_json or body.get("deliver", True) is not False
    if deliver:
        receive_notification(provider.name, headers, notification)
    if not request.is_json:
        back = urlsplit(payment.return_url)
        same_site = back.netloc == request.host
        return redirect(back.path if same_site else payment.return_url, code=303)
    return jsonify(
        {
            "outcome": outcome,
            "delivered": deliver,
            "return_url": payment.return_url,
            "notification": {"headers": headers, "body": notification.decode()},
        }
    )
