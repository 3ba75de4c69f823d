"""Domain errors. Each carries a stable code, a message for people and the HTTP status it maps
to; ``shop.web.errors`` turns them into pages and JSON in one place."""

from __future__ import annotations

from dataclasses import dataclass


class ShopError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> dict | None:
        return None

    def headers(self) -> dict[str, str]:
        """Response headers the answer must carry (``Retry-After``)."""
        return {}


class FormError(ShopError):
    """An error the shopper can fix in the form in front of them: a view shows that form again
    with it (``shop.web.errors.form_error``). Every other error goes to ``shop.web.errors``,
    which alone decides the answer (page or JSON, status, ``Retry-After``, a login redirect)."""


class InvalidInput(FormError):
    code = "invalid_input"


class InvalidQuantity(InvalidInput):
    code = "invalid_quantity"


class NotFound(FormError):
    """An id or page the shopper chose (a category, a page number, a cart line); a view with no
    form for it lets it through to the error page."""

    status = 404
    code = "not_found"


class EmptyCart(FormError):
    code = "empty_cart"


class QuantityUnavailable(FormError):
    """A cart line would exceed the stock or the per-line maximum."""

    status = 409
    code = "quantity_unavailable"

    def __init__(self, message: str, *, available: int) -> None:
        super().__init__(message, field="quantity")
        self.available = available

    def details(self) -> dict:
        return {"available": self.available}


@dataclass(frozen=True)
class ShortLine:
    product_id: int
    name: str
    requested: int
    available: int


class CartFull(FormError):
    status = 409
    code = "cart_full"


class OutOfStock(FormError):
    """Checkout found lines the stock cannot cover; nothing was written."""

    status = 409
    code = "out_of_stock"

    def __init__(self, lines: list[ShortLine]) -> None:
        described = "; ".join(
            f"{line.name}: {line.requested} wanted, {line.available} left" for line in lines
        )
        super().__init__(f"Not enough stock for: {described}")
        self.lines = lines

    def details(self) -> dict:
        return {
            "lines": [
                {
                    "product_id": line.product_id,
                    "name": line.name,
                    "requested": line.requested,
                    "available": line.available,
                }
                for line in self.lines
            ]
        }


@dataclass(frozen=True)
class PriceChange:
    """A cart line whose price is not the one the shopper saw (``seen_cents`` None: never
    seen, a line kept before carts remembered prices)."""

    product_id: int
    name: str
    seen_cents: int | None
    current_cents: int

    def as_json(self) -> dict:
        return {
            "product_id": self.product_id,
            "name": self.name,
            "seen_unit_price_cents": self.seen_cents,
            "unit_price_cents": self.current_cents,
        }


class PricesChanged(FormError):
    """Checkout found prices the shopper has not seen; nothing was written. Seeing them (the
    checkout page again, or accepting them in the cart) and ordering again places the order."""

    status = 409
    code = "prices_changed"

    def __init__(self, changes: list[PriceChange]) -> None:
        names = ", ".join(change.name for change in changes)
        super().__init__(
            f"Prices changed since you last saw them ({names}). Review them and order again."
        )
        self.changes = changes

    def details(self) -> dict:
        return {"lines": [change.as_json() for change in self.changes]}


class ProductsUnavailable(FormError):
    """The cart holds products that are no longer sold; checkout waits until they are removed."""

    status = 409
    code = "product_unavailable"

    def __init__(self, product_ids: list[int]) -> None:
        many = len(product_ids) > 1
        what = (
            f"{len(product_ids)} products in your cart are" if many else "A product in your cart is"
        )
        them = "them" if many else "it"
        super().__init__(f"{what} no longer available: remove {them} from your cart to check out.")
        self.product_ids = product_ids

    def details(self) -> dict:
        return {"product_ids": self.product_ids}


class DuplicateEmail(FormError):
    """An address change, confirmed, finds that the new address got an account meanwhile."""

    status = 409
    code = "duplicate_email"


class InvalidToken(FormError):
    """A mailed link that is malformed, tampered with, expired or already used."""

    code = "invalid_token"


class WrongPassword(FormError):
    """The current password, asked again before a change, is wrong."""

    code = "wrong_password"


class AlreadyVerified(ShopError):
    status = 409
    code = "already_verified"


class WeakPassword(InvalidInput):
    code = "weak_password"


class InvalidCredentials(FormError):
    status = 401
    code = "invalid_credentials"


class LoginRequired(ShopError):
    status = 401
    code = "login_required"


class ReauthRequired(FormError):
    """The session is signed in, but the password was last entered too long ago for this."""

    status = 401
    code = "reauth_required"


class AdminOnly(ShopError):
    """A staff member asked for what only an admin may do (roles, sessions, the audit)."""

    status = 403
    code = "admin_only"


class EditConflict(FormError):
    """The record changed since the form was loaded: the later save is refused, not merged."""

    status = 409
    code = "edit_conflict"


class CsrfFailure(ShopError):
    status = 403
    code = "csrf_failed"


class CrossOriginRefused(CsrfFailure):
    code = "cross_origin"


class ServiceUnavailable(ShopError):
    """A backing service (Redis, the primary database) is unreachable right now, or the shop is
    too busy to take this request."""

    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyRequests(FormError):
    """A rate rule refused the request before any work was done."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> dict:
        return {"retry_after": self.retry_after}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class MailUnavailable(ServiceUnavailable):
    """A mail the shopper needs (a link) could not be handed to the mail server. What was
    written before it stays written; the shopper is asked to try again."""

    code = "mail_unavailable"


class IllegalTransition(ShopError):
    """An order cannot go from its status to the one asked for (or another change won the
    race); nothing was changed."""

    status = 409
    code = "illegal_transition"


class IdempotencyKeyReused(ShopError):
    """The same ``Idempotency-Key`` came with a different request: refused, as Stripe does."""

    status = 422
    code = "idempotency_key_reused"


class InvalidNotification(ShopError):
    """A payment notification whose signature, timestamp or body does not verify."""

    status = 400
    code = "invalid_notification"


class InvalidImage(FormError):
    """An upload that is not a whole, readable image (no file, an empty or truncated one, a
    header with garbage after it); nothing was stored."""

    code = "invalid_image"


class UnsupportedImage(FormError):
    """An upload whose content (not its name) is another kind of file: a GIF, an SVG, a
    program; only JPEG, PNG and WebP are taken. Nothing was stored."""

    status = 415
    code = "unsupported_image"


class ImageTooLarge(FormError):
    """An upload over SHOP_IMAGE_MAX_BYTES, or whose pixels would take too much memory to
    decode (a decompression bomb); refused before it is decoded, nothing was stored."""

    status = 413
    code = "image_too_large"
