"""Carts in Redis: one hash per cart, product id -> ``"quantity:price"``.

The price is the unit price in cents the shopper last saw for the line (when adding it, or when
accepting a change): what is charged always comes from the catalogue at checkout, and an order
is placed only if that is the price the shopper saw (:func:`changed_prices`). A line written
before prices were kept is a bare ``"quantity"`` (its price counts as unseen).

Every change is one atomic Redis operation (a Lua script where a check and a write must go
together), so two tabs adding at the same moment lose nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import redis

from .errors import CartFull, InvalidQuantity, PriceChange, QuantityUnavailable

# A line's value is "quantity:price" (or a bare "quantity", written before prices were kept).
_LINE = """
local function quantity(line) return line and tonumber(string.match(line, '^%d+')) or 0 end
local function price(line) return line and string.match(line, ':(%d+)$') end
"""

# Check the caps and add in one step; returns {new quantity, quantity before}, the new quantity
# -1 past the line's cap, -2 when the cart already holds ARGV[5] other products. The line's
# price becomes ARGV[6], the price the shopper is adding at.
_ADD_SCRIPT = (
    _LINE
    + """
local current = quantity(redis.call('HGET', KEYS[1], ARGV[1]))
if current == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return {-2, 0} end
local wanted = current + tonumber(ARGV[2])
if wanted > tonumber(ARGV[3]) then return {-1, current} end
redis.call('HSET', KEYS[1], ARGV[1], wanted .. ':' .. ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {wanted, current}
"""
)

# Set a line's quantity unless that would be one product too many; -2 then, else 1. A line
# keeps the price it was seen at; a new one (or one without) gets ARGV[5].
_SET_SCRIPT = (
    _LINE
    + """
local line = redis.call('HGET', KEYS[1], ARGV[1])
if not line and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. (price(line) or ARGV[5]))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# Fold a visitor's lines (read by the caller from the visitor's slot) into KEYS[1], the
# account's cart: quantities add up, each capped; the price is the one this browser saw, else
# the account's. ARGV: ttl, then id / cap / the visitor's line triples.
_MERGE_SCRIPT = (
    _LINE
    + """
for i = 2, #ARGV, 3 do
  local pid = ARGV[i]
  local cap = tonumber(ARGV[i + 1])
  local theirs = ARGV[i + 2] ~= '' and ARGV[i + 2]
  local mine = redis.call('HGET', KEYS[1], pid)
  local total = math.min(quantity(theirs) + quantity(mine), cap)
  local seen = price(theirs) or price(mine)
  if total > 0 then
    redis.call('HSET', KEYS[1], pid, seen and (total .. ':' .. seen) or tostring(total))
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""
)

# The shopper accepted these prices: each line still in the cart keeps its quantity and takes
# its new price. ARGV: ttl, then id / price pairs.
_CONFIRM_SCRIPT = (
    _LINE
    + """
for i = 2, #ARGV, 2 do
  local line = redis.call('HGET', KEYS[1], ARGV[i])
  if line then redis.call('HSET', KEYS[1], ARGV[i], quantity(line) .. ':' .. ARGV[i + 1]) end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""
)


@dataclass(frozen=True)
class CartLine:
    quantity: int
    seen_price_cents: int | None  # None: kept before prices were (counts as never seen)


def decode_line(value: str) -> CartLine:
    quantity, _, price = value.partition(":")
    return CartLine(int(quantity), int(price) if price else None)


@dataclass(frozen=True)
class CartOwner:
    """A cart belongs to a visitor's session (``s``) or to an account (``u``)."""

    kind: str
    ident: str

    @classmethod
    def session(cls, session_id: str) -> CartOwner:
        return cls("s", session_id)

    @classmethod
    def account(cls, user_id: int) -> CartOwner:
        return cls("u", str(user_id))


class CartStore:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        visitor_ttl: int,
        account_ttl: int,
        max_line_quantity: int,
        max_lines: int = 50,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.visitor_ttl = visitor_ttl
        self.account_ttl = account_ttl
        self.max_line_quantity = max_line_quantity
        self.max_lines = max_lines
        self._add = client.register_script(_ADD_SCRIPT)
        self._set = client.register_script(_SET_SCRIPT)
        self._merge = client.register_script(_MERGE_SCRIPT)
        self._confirm = client.register_script(_CONFIRM_SCRIPT)

    def key(self, owner: CartOwner) -> str:
        """``{s:<ref>}`` or ``{u:<id>}`` is the key's hash tag: a visitor's cart lives on its
        session's Redis Cluster slot, an account's on the account's (shop/sessions.py)."""
        return f"{self.prefix}{{{owner.kind}:{owner.ident}}}:cart"

    def ttl_for(self, owner: CartOwner) -> int:
        return self.account_ttl if owner.kind == "u" else self.visitor_ttl

    def lines(self, owner: CartOwner) -> dict[int, CartLine]:
        """Each line's quantity and the price it was seen at."""
        raw = cast(dict[str, str], self.client.hgetall(self.key(owner)))
        return {int(pid): decode_line(value) for pid, value in raw.items()}

    def get(self, owner: CartOwner) -> dict[int, int]:
        """The quantities alone."""
        return {pid: line.quantity for pid, line in self.lines(owner).items()}

    def cap(self, stock: int) -> int:
        return max(0, min(stock, self.max_line_quantity))

    def check_quantity(self, quantity: int, *, allow_zero: bool) -> None:
        """The per-line maximum, the one place it is checked (forms and the API ask it)."""
        if quantity < 0 or (quantity == 0 and not allow_zero):
            message = "Quantity cannot be negative." if allow_zero else "Add at least 1."
            raise InvalidQuantity(message, field="quantity")
        if quantity > self.max_line_quantity:
            raise InvalidQuantity(
                f"Quantity must be at most {self.max_line_quantity}.", field="quantity"
            )

    def add(
        self, owner: CartOwner, product_id: int, quantity: int, *, stock: int, price_cents: int
    ) -> int:
        """Add ``quantity`` at ``price_cents`` (the price the shopper sees, now the line's);
        refuses (and changes nothing) past the stock or the line maximum, saying which of the
        two it reached."""
        self.check_quantity(quantity, allow_zero=False)
        cap = self.cap(stock)
        new, before = self._add(
            keys=[self.key(owner)],
            args=[product_id, quantity, cap, self.ttl_for(owner), self.max_lines, price_cents],
        )
        if new == -2:
            raise self._full()
        if new == -1:
            if stock < self.max_line_quantity:
                message = _unavailable_message(cap, before)
            else:
                message = _line_maximum_message(self.max_line_quantity, before)
            raise QuantityUnavailable(message, available=cap - before)
        return int(new)

    def set(
        self, owner: CartOwner, product_id: int, quantity: int, *, stock: int, price_cents: int
    ) -> None:
        """Set a line's quantity; 0 removes it. The line keeps the price it was seen at; a new
        line is seen at ``price_cents``."""
        self.check_quantity(quantity, allow_zero=True)
        if quantity == 0:
            self.remove(owner, product_id)
            return
        cap = self.cap(stock)
        if quantity > cap:
            raise QuantityUnavailable(_unavailable_message(cap, 0), available=cap)
        written = self._set(
            keys=[self.key(owner)],
            args=[product_id, quantity, self.ttl_for(owner), self.max_lines, price_cents],
        )
        if written == -2:
            raise self._full()

    def _full(self) -> CartFull:
        return CartFull(
            f"A cart holds at most {self.max_lines} different products. "
            "Check out or remove some first."
        )

    def remove(self, owner: CartOwner, product_id: int) -> None:
        self.client.hdel(self.key(owner), str(product_id))

    def clear(self, owner: CartOwner) -> None:
        self.client.delete(self.key(owner))

    def confirm_prices(self, owner: CartOwner, prices: Mapping[int, int]) -> None:
        """The shopper has seen these unit prices: the lines still in the cart take them."""
        args: list[int] = [self.ttl_for(owner)]
        for product_id, price_cents in prices.items():
            args += [product_id, price_cents]
        self._confirm(keys=[self.key(owner)], args=args)

    def merge(self, source: CartOwner, target: CartOwner, caps: dict[int, int]) -> None:
        """Fold ``source`` into ``target`` (login): quantities add up, capped per product.
        The two carts live on different slots: the visitor's lines are read here and folded
        in by one script on the account's slot, then the visitor's cart is dropped."""
        theirs = cast(dict[str, str], self.client.hgetall(self.key(source)))
        args: list[int | str] = [self.ttl_for(target)]
        for product_id, cap in caps.items():
            args += [product_id, self.cap(cap), theirs.get(str(product_id), "")]
        self._merge(keys=[self.key(target)], args=args)
        self.client.delete(self.key(source))


def _line_maximum_message(maximum: int, in_cart: int) -> str:
    return f"The per-product maximum is {maximum}, and {in_cart} are already in your cart."


def _unavailable_message(cap: int, in_cart: int) -> str:
    if cap == 0:
        return "This product is sold out."
    if in_cart:
        return f"Only {cap} available and {in_cart} already in your cart."
    return f"Only {cap} available."


def changed_prices(
    seen: Mapping[int, int | None], current: Mapping[int, tuple[str, int]]
) -> list[PriceChange]:
    """The lines whose current price (``current``: id -> name, unit price) is not the one the
    shopper saw (``seen``: id -> unit price); a line never seen counts as changed."""
    return [
        PriceChange(product_id, name, seen.get(product_id), price_cents)
        for product_id, (name, price_cents) in sorted(current.items())
        if seen.get(product_id) != price_cents
    ]


@dataclass(frozen=True)
class PricedLine:
    product_id: int
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    stock: int
    seen_price_cents: int | None = None


@dataclass(frozen=True)
class PricedCart:
    """The cart at today's prices. ``unavailable`` holds lines whose product is gone from the
    catalogue (id -> quantity): shown so they can be removed, counted in no total."""

    lines: list[PricedLine]
    unavailable: dict[int, int] = field(default_factory=dict)

    @property
    def total_cents(self) -> int:
        return sum(line.line_total_cents for line in self.lines)

    @property
    def count(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def price_changes(self) -> list[PriceChange]:
        return changed_prices(
            {line.product_id: line.seen_price_cents for line in self.lines},
            {line.product_id: (line.name, line.unit_price_cents) for line in self.lines},
        )

    @property
    def shown_prices(self) -> str:
        """The prices on the page, for a form that accepts them: ``"id:cents,id:cents"``."""
        return ",".join(f"{line.product_id}:{line.unit_price_cents}" for line in self.lines)

    def as_json(self) -> dict:
        return {
            "items": [
                {
                    "product_id": line.product_id,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_cents": line.unit_price_cents,
                    "line_total_cents": line.line_total_cents,
                    "seen_unit_price_cents": line.seen_price_cents,
                }
                for line in self.lines
            ],
            "total_cents": self.total_cents,
            "count": self.count,
            "price_changes": [change.as_json() for change in self.price_changes],
            "unavailable": [
                {"product_id": pid, "quantity": qty}
                for pid, qty in sorted(self.unavailable.items())
            ],
        }


def parse_shown_prices(text: str | None) -> dict[int, int] | None:
    """Read back :attr:`PricedCart.shown_prices`; None when absent or malformed (a form that
    carried none: the cart's own prices are what the shopper saw)."""
    if not text:
        return None
    prices: dict[int, int] = {}
    for pair in text.split(","):
        pid, _, cents = pair.partition(":")
        if not (pid.isdigit() and cents.isdigit()) or len(pid) > 10 or len(cents) > 19:
            return None
        prices[int(pid)] = int(cents)
    return prices


def price_cart(lines: Mapping[int, CartLine], products: Mapping[int, dict]) -> PricedCart:
    """Cart lines with today's catalogue prices, beside the price each was seen at; a product
    that no longer exists is set apart as unavailable."""
    priced = [
        PricedLine(
            product_id=pid,
            name=products[pid]["name"],
            quantity=line.quantity,
            unit_price_cents=products[pid]["price_cents"],
            line_total_cents=products[pid]["price_cents"] * line.quantity,
            stock=products[pid]["stock"],
            seen_price_cents=line.seen_price_cents,
        )
        for pid, line in sorted(lines.items())
        if pid in products
    ]
    gone = {pid: line.quantity for pid, line in lines.items() if pid not in products}
    return PricedCart(priced, gone)
