"""Carts in Redis: one hash per cart, product id -> quantity. Prices never live here.

Every change is one atomic Redis operation (a Lua script where a check and a write must go
together), so two tabs adding at the same moment lose nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from .errors import CartFull, InvalidQuantity, QuantityUnavailable

# Check the caps and add in one step; returns {new quantity, quantity before}, the new quantity
# -1 past the line's cap, -2 when the cart already holds ARGV[5] other products.
_ADD_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return {-2, 0} end
local wanted = current + tonumber(ARGV[2])
if wanted > tonumber(ARGV[3]) then return {-1, current} end
redis.call('HSET', KEYS[1], ARGV[1], wanted)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {wanted, current}
"""

# Set a line's quantity unless that would be one product too many; -2 then, else 1.
_SET_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Move KEYS[1] (a visitor's cart) into KEYS[2] (the account's): quantities add up, each capped.
# ARGV: ttl, then product id / cap pairs.
_MERGE_SCRIPT = """
for i = 2, #ARGV, 2 do
  local pid = ARGV[i]
  local cap = tonumber(ARGV[i + 1])
  local theirs = tonumber(redis.call('HGET', KEYS[1], pid) or '0')
  local mine = tonumber(redis.call('HGET', KEYS[2], pid) or '0')
  local total = math.min(theirs + mine, cap)
  if total > 0 then redis.call('HSET', KEYS[2], pid, total) end
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return 1
"""


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

    def key(self, owner: CartOwner) -> str:
        return f"{self.prefix}cart:{owner.kind}:{owner.ident}"

    def ttl_for(self, owner: CartOwner) -> int:
        return self.account_ttl if owner.kind == "u" else self.visitor_ttl

    def get(self, owner: CartOwner) -> dict[int, int]:
        raw = cast(dict[str, str], self.client.hgetall(self.key(owner)))
        return {int(pid): int(qty) for pid, qty in raw.items()}

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

    def add(self, owner: CartOwner, product_id: int, quantity: int, *, stock: int) -> int:
        """Add ``quantity``; refuses (and changes nothing) past the stock or the line maximum,
        saying which of the two it reached."""
        self.check_quantity(quantity, allow_zero=False)
        cap = self.cap(stock)
        new, before = self._add(
            keys=[self.key(owner)],
            args=[product_id, quantity, cap, self.ttl_for(owner), self.max_lines],
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

    def set(self, owner: CartOwner, product_id: int, quantity: int, *, stock: int) -> None:
        """Set a line's quantity; 0 removes it."""
        self.check_quantity(quantity, allow_zero=True)
        if quantity == 0:
            self.remove(owner, product_id)
            return
        cap = self.cap(stock)
        if quantity > cap:
            raise QuantityUnavailable(_unavailable_message(cap, 0), available=cap)
        written = self._set(
            keys=[self.key(owner)],
            args=[product_id, quantity, self.ttl_for(owner), self.max_lines],
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

    def merge(self, source: CartOwner, target: CartOwner, caps: dict[int, int]) -> None:
        """Fold ``source`` into ``target`` (login): quantities add up, capped per product."""
        args: list[int] = [self.ttl_for(target)]
        for product_id, cap in caps.items():
            args += [product_id, self.cap(cap)]
        self._merge(keys=[self.key(source), self.key(target)], args=args)


def _line_maximum_message(maximum: int, in_cart: int) -> str:
    return f"The per-product maximum is {maximum}, and {in_cart} are already in your cart."


def _unavailable_message(cap: int, in_cart: int) -> str:
    if cap == 0:
        return "This product is sold out."
    if in_cart:
        return f"Only {cap} available and {in_cart} already in your cart."
    return f"Only {cap} available."


@dataclass(frozen=True)
class PricedLine:
    product_id: int
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    stock: int


@dataclass(frozen=True)
class PricedCart:
    lines: list[PricedLine]

    @property
    def total_cents(self) -> int:
        return sum(line.line_total_cents for line in self.lines)

    @property
    def count(self) -> int:
        return sum(line.quantity for line in self.lines)

    def as_json(self) -> dict:
        return {
            "items": [
                {
                    "product_id": line.product_id,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_cents": line.unit_price_cents,
                    "line_total_cents": line.line_total_cents,
                }
                for line in self.lines
            ],
            "total_cents": self.total_cents,
            "count": self.count,
        }


def price_cart(quantities: dict[int, int], products: dict[int, dict]) -> PricedCart:
    """Cart lines with today's catalogue prices; products that no longer exist drop out."""
    lines = [
        PricedLine(
            product_id=pid,
            name=products[pid]["name"],
            quantity=qty,
            unit_price_cents=products[pid]["price_cents"],
            line_total_cents=products[pid]["price_cents"] * qty,
            stock=products[pid]["stock"],
        )
        for pid, qty in sorted(quantities.items())
        if pid in products
    ]
    return PricedCart(lines)
