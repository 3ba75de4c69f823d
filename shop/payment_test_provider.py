"""The built-in test provider: a hosted payment page in TEST MODE, as Stripe's and Adyen's
test modes are, so the whole journey runs on one machine and in CI.

It keeps no state of its own: a payment id is the order, amount and return URL signed under
the provider's key, so any instance can show any payment's page. Its notifications are signed
with the webhook secret and go through the very check a real provider's go through
(:meth:`TestProvider.verify_notification`).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import InvalidNotification, NotFound
from .order_records import Order
from .payments import (
    DECLINED,
    SIGNATURE_HEADER,
    SUCCEEDED,
    Notification,
    Payment,
    check_signature,
    sign,
)

log = logging.getLogger(__name__)

OUTCOMES = {"succeed": SUCCEEDED, "decline": DECLINED}


@dataclass(frozen=True)
class TestPayment:
    id: str
    order_id: int
    amount_cents: int
    return_url: str


class TestProvider:
    name = "test"

    def __init__(
        self, webhook_secret: str, id_key: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.webhook_secret = webhook_secret
        self.ids = URLSafeSerializer(id_key, salt="test-payment")
        self.clock = clock

    def create_payment(self, order: Order, *, return_url: str) -> Payment:
        payment_id = self.ids.dumps(
            {"o": order.id, "a": order.total_cents, "r": return_url, "n": secrets.token_hex(8)}
        )
        origin = urlsplit(return_url)
        # The test provider's pages are served by the shop itself, on the shop's origin.
        url = f"{origin.scheme}://{origin.netloc}/test-payments/{payment_id}"
        return Payment(payment_id, url)

    def payment(self, payment_id: str) -> TestPayment:
        try:
            data = self.ids.loads(payment_id)
        except BadSignature:
            raise NotFound("There is no such test payment.") from None
        return TestPayment(payment_id, int(data["o"]), int(data["a"]), str(data["r"]))

    def notification(self, payment: TestPayment, outcome: str) -> tuple[dict[str, str], bytes]:
        """What the provider POSTs to the shop's webhook: headers and body."""
        body = json.dumps(
            {
                "id": f"evt_{secrets.token_hex(12)}",
                "payment": payment.id,
                "order_id": payment.order_id,
                "outcome": OUTCOMES[outcome],
                "amount_cents": payment.amount_cents,
            }
        ).encode()
        header = sign(self.webhook_secret, int(self.clock()), body)
        return {SIGNATURE_HEADER: header, "Content-Type": "application/json"}, body

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        check_signature(self.webhook_secret, headers.get(SIGNATURE_HEADER), body, now=self.clock())
        try:
            data = json.loads(body)
            found = Notification(
                event_id=str(data["id"]),
                payment_ref=str(data["payment"]),
                order_id=int(data["order_id"]),
                outcome=str(data["outcome"]),
                amount_cents=int(data["amount_cents"]),
            )
        except (ValueError, KeyError, TypeError):
            raise InvalidNotification("The notification's body is malformed.") from None
        if found.outcome not in (SUCCEEDED, DECLINED):
            raise InvalidNotification("The notification's outcome is unknown.")
        return found

    def refund(self, payment_ref: str, amount_cents: int) -> str:
        refund_id = f"re_test_{secrets.token_hex(8)}"
        log.info("TEST MODE refund %s of %d cents (%s)", refund_id, amount_cents, refund_id)
        return refund_id
