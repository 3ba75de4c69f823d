"""Bad input gets a clear 4xx and changes nothing; no input makes a 500.

Every case in the table starts from a fresh shop where the shopper has two kettles in the cart
(and, depending on ``state``, an account or another shopper's order exists), sends one bad
request and checks the status; for the API the error shape ``{"error": {"code", "message"}}``;
for pages that the message is shown (with the form again where there is one); and that nothing
changed: the cart, who is logged in, the stock, and the users and orders in the database.
"""

from __future__ import annotations

import html
import re
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fakeredis
import pytest
from flask import Flask
from sqlalchemy import event, text
from werkzeug.test import TestResponse

from tests.support import KETTLE, MUG, TEAPOT, Shopper, StatementCounter, fake_client

SHIPPING = {"name": "Ada Lovelace", "address": "1 Analytical St"}
KEY = {"Idempotency-Key": "order-1"}
JSON = {"Content-Type": "application/json"}
OVER_LIMIT = "x" * (64 * 1024)  # settings.max_body_bytes is 64 KiB
CSRF_MESSAGE = "CSRF token missing or invalid"
CREDENTIALS = "Wrong email or password."
PER_PAGE = "Per page must be 12, 24, 48 or 96."  # the default SHOP_PER_PAGE_CHOICES
WINDOW = "Only the first 10,000 results can be shown"  # the default SHOP_MAX_RESULT_WINDOW


@dataclass(frozen=True)
class Case:
    """One bad request and what it must get. ``path`` may name ``{order}``: another shopper's
    order id."""

    id: str
    method: str
    path: str
    status: int
    code: str | None = None  # API: error.code
    message: str = ""  # a piece of the message a person reads
    json: Any = None  # API: a JSON body
    body: str | bytes | None = None  # API: a raw body, sent as it is
    headers: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] | None = None  # pages: the form fields (the CSRF token is added)
    shows: str | None = None  # pages: the action of the form that is shown again
    keeps: str | None = None  # pages: what the shopper typed, still in the form
    state: str = "visitor"  # see prepare()
    token: str = "own"  # own | no | forged | other (another session's valid token)
    cookie: str | None = None  # malformed | unknown: the browser's session cookie, altered

    @property
    def api(self) -> bool:
        return self.path.startswith("/api/")


def _api(id: str, method: str, path: str, status: int, code: str, message: str = "", **kw):
    return Case(id, method, path, status, code, message, **kw)


def _page(id: str, method: str, path: str, status: int, message: str, **kw):
    return Case(id, method, path, status, None, message, **kw)


def _add(quantity: Any, product_id: Any = KETTLE) -> dict:
    return {"product_id": product_id, "quantity": quantity}


def _set(quantity: Any) -> dict:
    return {"quantity": quantity}


def _form(product_id: str, quantity: str = "1") -> dict[str, str]:
    return {"product_id": product_id, "quantity": quantity}


# The tables read best as tables: one case per line or two, not one argument per line.
# fmt: off
IDS = [
    _api("api product abc", "GET", "/api/v1/products/abc", 404, "not_found"),
    _api("api product 0", "GET", "/api/v1/products/0", 404, "not_found"),
    _api("api product 2**31", "GET", "/api/v1/products/2147483648", 404, "not_found"),
    _api("api product 10**20", "GET", "/api/v1/products/99999999999999999999", 404, "not_found"),
    _api("api product unknown", "GET", "/api/v1/products/99999", 404, "not_found", "99999"),
    _api("api put item abc", "PUT", "/api/v1/cart/items/abc", 404, "not_found", json=_set(1)),
    _api("api put item 0", "PUT", "/api/v1/cart/items/0", 404, "not_found", json=_set(1)),
    _api("api put item unknown", "PUT", "/api/v1/cart/items/99999", 404, "not_found",
         json=_set(1)),
    _api("api delete item abc", "DELETE", "/api/v1/cart/items/abc", 404, "not_found"),
    _api("api delete item 0", "DELETE", "/api/v1/cart/items/0", 404, "not_found"),
    _api("api delete item 2**31", "DELETE", "/api/v1/cart/items/2147483648", 404, "not_found"),
    _api("api order abc", "GET", "/api/v1/orders/abc", 404, "not_found", state="member"),
    _page("page product abc", "GET", "/products/abc", 404, "no page at this address"),
    _page("page product 0", "GET", "/products/0", 404, "no page at this address"),
    _page("page product 10**20", "GET", "/products/99999999999999999999", 404, "no page"),
    _page("page product unknown", "GET", "/products/99999", 404, "There is no product 99999."),
    _page("page order 0", "GET", "/orders/0", 404, "no page at this address", state="member"),
]

QUANTITIES = [
    _api(f"api add quantity {value!r}", "POST", "/api/v1/cart/items", 400, "invalid_quantity",
         message, json=_add(value))
    for value, message in [
        (0, "at least 1"),
        (-1, "at least 1"),
        (1.5, "whole number"),
        (True, "whole number"),
        ("2", "whole number"),
        (None, "required"),
        (1e300, "whole number"),
        (100, "at most 99"),
        (10**30, "at most 99"),
    ]
] + [
    _api("api add quantity missing", "POST", "/api/v1/cart/items", 400, "invalid_quantity",
         "required", json={"product_id": KETTLE}),
    _api("api add past the stock", "POST", "/api/v1/cart/items", 409, "quantity_unavailable",
         "Only 3 available", json=_add(4, MUG)),
    _api("api add sold out", "POST", "/api/v1/cart/items", 409, "quantity_unavailable",
         "sold out", json=_add(1, TEAPOT)),
] + [
    _api(f"api set quantity {value!r}", "PUT", f"/api/v1/cart/items/{KETTLE}", 400,
         "invalid_quantity", message, json={"quantity": value})
    for value, message in [
        (-1, "at least 0"),
        (1.5, "whole number"),
        (False, "whole number"),
        ("3", "whole number"),
        (None, "required"),
        (100, "at most 99"),
        (10**30, "at most 99"),
    ]
] + [
    _api("api set past the stock", "PUT", f"/api/v1/cart/items/{MUG}", 409,
         "quantity_unavailable", "Only 3 available", json={"quantity": 4}),
] + [
    _api(f"api add product_id {value!r}", "POST", "/api/v1/cart/items", 400, "invalid_input",
         message, json=_add(1, value))
    for value, message in [
        (None, "required"),
        ("1", "whole number"),
        (1.0, "whole number"),
        (True, "whole number"),
        (0, "at least 1"),
        (-5, "at least 1"),
        (2**31, "at most 2147483647"),
        (10**30, "at most 2147483647"),
    ]
] + [
    _api("api add product unknown", "POST", "/api/v1/cart/items", 404, "not_found", "99999",
         json=_add(1, 99999)),
] + [
    _page(f"page add quantity {value!r}", "POST", "/cart/add", 400, message,
          form=_form(str(KETTLE), value), shows="/cart/add")
    for value, message in [
        ("0", "Quantity must be at least 1."),
        ("-1", "Quantity must be a whole number."),
        ("1.5", "Quantity must be a whole number."),
        ("two", "Quantity must be a whole number."),
        ("", "Quantity must be a whole number."),
        ("1e3", "Quantity must be a whole number."),
        ("100", "Quantity must be at most 99."),
        (str(10**30), "Quantity must be at most 99."),
    ]
] + [
    _page("page add past the stock", "POST", "/cart/add", 409, "Only 3 available.",
          form=_form(str(MUG), "4"), shows="/cart/add"),
    _page("page add sold out", "POST", "/cart/add", 409, "This product is sold out.",
          form=_form(str(TEAPOT)), shows="/cart/add"),
    _page("page add product abc", "POST", "/cart/add", 400, "Product id must be a whole number.",
          form=_form("abc"), shows="/cart/update"),
    _page("page add product 0", "POST", "/cart/add", 400, "Product id must be at least 1.",
          form=_form("0"), shows="/cart/update"),
    _page("page add product 10**20", "POST", "/cart/add", 400, "Product id must be at most",
          form=_form("99999999999999999999"), shows="/cart/update"),
    _page("page add product missing", "POST", "/cart/add", 400, "Product id must be a whole",
          form={"quantity": "1"}, shows="/cart/update"),
    _page("page add product unknown", "POST", "/cart/add", 404, "There is no product 99999.",
          form=_form("99999")),
    _page("page update quantity x", "POST", "/cart/update", 400, "Quantity must be a whole",
          form=_form(str(KETTLE), "x"), shows="/cart/update"),
    _page("page update quantity -1", "POST", "/cart/update", 400, "Quantity must be a whole",
          form=_form(str(KETTLE), "-1"), shows="/cart/update"),
    _page("page update quantity 100", "POST", "/cart/update", 400, "Quantity must be at most 99.",
          form=_form(str(KETTLE), "100"), shows="/cart/update"),
    _page("page update past the stock", "POST", "/cart/update", 409, "Only 3 available.",
          form=_form(str(MUG), "4"), shows="/cart/update"),
    _page("page update product unknown", "POST", "/cart/update", 404, "There is no product",
          form=_form("99999"), shows="/cart/update"),
    _page("page remove product abc", "POST", "/cart/remove", 400, "Product id must be a whole",
          form={"product_id": "abc"}, shows="/cart/update"),
]

BODIES = [
    _api(f"api body {label}", "POST", "/api/v1/cart/items", 400, "invalid_input",
         "Send a JSON object", body=body, headers=headers)
    for label, body, headers in [
        ("a list", "[1, 2]", JSON),
        ("a string", '"product 1"', JSON),
        ("null", "null", JSON),
        ("a number", "5", JSON),
        ("invalid JSON", '{"product_id": 1,', JSON),
        ("empty", "", JSON),
        ("not UTF-8", b'{"product_id": 1, "quantity": "\xff"}', JSON),
        ("nested too deep", "[" * 20_000 + "]" * 20_000, JSON),
        ("an integer of 5000 digits", '{"product_id": 1, "quantity": ' + "9" * 5000 + "}", JSON),
        ("no Content-Type", '{"product_id": 1, "quantity": 1}', {}),
        ("text/plain", '{"product_id": 1, "quantity": 1}', {"Content-Type": "text/plain"}),
    ]
] + [
    _api("api body over the limit", "POST", "/api/v1/cart/items", 413,
         "request_entity_too_large", "too large",
         json={"product_id": KETTLE, "quantity": 1, "pad": OVER_LIMIT}),
    _api("api register body over the limit", "POST", "/api/v1/users", 413,
         "request_entity_too_large", "too large",
         json={"email": "new@example.com", "password": "correct horse 42", "pad": OVER_LIMIT}),
    _page("page add body over the limit", "POST", "/cart/add", 413, "too large",
          form={**_form(str(KETTLE)), "pad": OVER_LIMIT}),
    _page("page register body over the limit", "POST", "/register", 413, "too large",
          form={"email": "new@example.com", "password": "correct horse 42", "pad": OVER_LIMIT}),
    _api("api login body a list", "POST", "/api/v1/session/login", 400, "invalid_input",
         json=["ada@example.com", "correct horse 42"], state="account"),
    _api("api register body nested too deep", "POST", "/api/v1/users", 400, "invalid_input",
         body='{"email": ' * 5_000 + "1" + "}" * 5_000, headers=JSON),
    _api("api checkout body a list", "POST", "/api/v1/orders", 400, "invalid_input",
         json=[SHIPPING], headers=KEY, state="member"),
] + [
    # Nesting the parser accepts (Python's limit is ~1,000) used to exhaust the NUL check's
    # recursion: a 500 and a 120 KB traceback per 1 KB request.
    _api(f"api {name} body nested {depth} deep", "POST", path, 400, "invalid_input",
         "nest at most", body='{"x": ' + "[" * depth + "]" * depth + "}",
         headers={**JSON, **KEY}, state=state)
    for depth in (17, 400, 800)
    for name, path, state in [
        ("register", "/api/v1/users", "visitor"),
        ("login", "/api/v1/session/login", "account"),
        ("checkout", "/api/v1/orders", "member"),
    ]
] + [
    # A lone surrogate decodes from JSON but cannot be encoded for PostgreSQL or the hash.
    _api(f"api {name} lone surrogate in {field}", "POST", path, 400, "invalid_input",
         "valid Unicode", body=body, headers={**JSON, **KEY}, state=state)
    for name, path, state, field, body in [
        ("register", "/api/v1/users", "visitor", "email",
         '{"email": "a\\ud800@example.com", "password": "correct horse 42"}'),
        ("register", "/api/v1/users", "visitor", "password",
         '{"email": "new@example.com", "password": "correct horse \\ud800"}'),
        ("login", "/api/v1/session/login", "account", "email",
         '{"email": "\\udfff", "password": "correct horse 42"}'),
        ("login", "/api/v1/session/login", "account", "password",
         '{"email": "ada@example.com", "password": "\\ud800\\ud800"}'),
        ("checkout", "/api/v1/orders", "member", "shipping name",
         '{"shipping": {"name": "Ada \\ud800", "address": "1 Analytical St"}}'),
        ("checkout", "/api/v1/orders", "member", "shipping address",
         '{"shipping": {"name": "Ada", "address": "\\udc00 Analytical St"}}'),
    ]
]

SESSIONS = [
    _api(f"api add, {token} CSRF token", "POST", "/api/v1/cart/items", 403, "csrf_failed",
         CSRF_MESSAGE, json=_add(1), token=token)
    for token in ("no", "forged", "other")
] + [
    _api("api set, forged CSRF token", "PUT", f"/api/v1/cart/items/{KETTLE}", 403, "csrf_failed",
         json={"quantity": 5}, token="forged"),
    _api("api delete, no CSRF token", "DELETE", f"/api/v1/cart/items/{KETTLE}", 403,
         "csrf_failed", token="no"),
    _api("api checkout, no CSRF token", "POST", "/api/v1/orders", 403, "csrf_failed",
         json={"shipping": SHIPPING}, headers=KEY, state="member", token="no"),
    _api("api logout, no CSRF token", "POST", "/api/v1/session/logout", 403, "csrf_failed",
         state="member", token="no"),
    _api("api register, no CSRF token", "POST", "/api/v1/users", 403, "csrf_failed",
         json={"email": "new@example.com", "password": "correct horse 42"}, token="no"),
    _api("api login, other CSRF token", "POST", "/api/v1/session/login", 403, "csrf_failed",
         json={"email": "ada@example.com", "password": "correct horse 42"}, state="account",
         token="other"),
] + [
    _page(f"page add, {token} CSRF token", "POST", "/cart/add", 403, CSRF_MESSAGE,
          form=_form(str(KETTLE)), token=token)
    for token in ("no", "forged", "other")
] + [
    _page("page remove, no CSRF token", "POST", "/cart/remove", 403, CSRF_MESSAGE,
          form={"product_id": str(KETTLE)}, token="no"),
    _page("page checkout, no CSRF token", "POST", "/checkout", 403, CSRF_MESSAGE,
          form={**SHIPPING, "idempotency_key": "order-1"}, state="member", token="no"),
    _page("page logout, forged CSRF token", "POST", "/logout", 403, CSRF_MESSAGE,
          state="member", token="forged"),
    _page("page register, no CSRF token", "POST", "/register", 403, CSRF_MESSAGE,
          form={"email": "new@example.com", "password": "correct horse 42"}, token="no"),
] + [
    _api(f"api add, {cookie} cookie", "POST", "/api/v1/cart/items", 403, "csrf_failed",
         json=_add(1), cookie=cookie)
    for cookie in ("malformed", "unknown")
] + [
    _api("api delete, unknown cookie", "DELETE", f"/api/v1/cart/items/{KETTLE}", 403,
         "csrf_failed", cookie="unknown"),
    _api("api logout, unknown cookie", "POST", "/api/v1/session/logout", 403, "csrf_failed",
         state="member", cookie="unknown"),
    _api("api checkout, malformed cookie", "POST", "/api/v1/orders", 403, "csrf_failed",
         json={"shipping": SHIPPING}, headers=KEY, state="member", cookie="malformed"),
] + [
    _page(f"page add, {cookie} cookie", "POST", "/cart/add", 403, CSRF_MESSAGE,
          form=_form(str(KETTLE)), cookie=cookie)
    for cookie in ("malformed", "unknown")
] + [
    _page("page checkout, unknown cookie", "POST", "/checkout", 403, CSRF_MESSAGE,
          form={**SHIPPING, "idempotency_key": "order-1"}, state="member", cookie="unknown"),
]

# A taken email is no error any more: registration answers the same (tests/app/test_accounts.py).
ACCOUNTS = [
    _api("api change password, wrong current one", "PUT", "/api/v1/account/password", 400,
         "wrong_password", "not right", state="member",
         json={"current_password": "wrong horse 42", "new_password": "a new horse 4242"}),
    _api("api change password, breached new one", "PUT", "/api/v1/account/password", 400,
         "weak_password", "stolen", state="member",
         json={"current_password": "correct horse 42", "new_password": "qwertyuiop123"}),
    _api("api change password, same as now", "PUT", "/api/v1/account/password", 400,
         "invalid_input", "different", state="member",
         json={"current_password": "correct horse 42", "new_password": "correct horse 42"}),
    _api("api change password, logged out", "PUT", "/api/v1/account/password", 401,
         "login_required",
         json={"current_password": "correct horse 42", "new_password": "a new horse 4242"}),
    _api("api change password, no CSRF token", "PUT", "/api/v1/account/password", 403,
         "csrf_failed", state="member", token="no",
         json={"current_password": "correct horse 42", "new_password": "a new horse 4242"}),
    _api("api change email, wrong password", "POST", "/api/v1/account/email", 400,
         "wrong_password", state="member",
         json={"password": "wrong horse 42", "email": "new@example.com"}),
    _api("api change email, not an address", "POST", "/api/v1/account/email", 400,
         "invalid_input", "valid email", state="member",
         json={"password": "correct horse 42", "email": "new at example"}),
    _api("api change email, the same address", "POST", "/api/v1/account/email", 400,
         "invalid_input", "already your address", state="member",
         json={"password": "correct horse 42", "email": "ADA@example.com"}),
    _api("api account, logged out", "GET", "/api/v1/account", 401, "login_required"),
    _api("api reset, not an address", "POST", "/api/v1/password/reset", 400, "invalid_input",
         "valid email", json={"email": "ada"}),
    _api("api reset confirm, made-up token", "POST", "/api/v1/password/reset/confirm", 400,
         "invalid_token", "expired or was already used", state="account",
         json={"token": "1.abc.ZGF0YQ." + "x" * 43, "new_password": "a new horse 4242"}),
    _api("api reset confirm, token a number", "POST", "/api/v1/password/reset/confirm", 400,
         "invalid_token", json={"token": 7, "new_password": "a new horse 4242"}),
    _api("api reset confirm, huge user id", "POST", "/api/v1/password/reset/confirm", 400,
         "invalid_token", json={"token": "zzzzzzzzzzzz.1.." + "x" * 43, "new_password": "x" * 13}),
    _page("page verify, made-up token", "GET", "/verify/not-a-token", 400,
          "expired or was already used"),
    _page("page reset, made-up token", "GET", "/password/reset/1.2.." + "y" * 43, 400,
          "expired or was already used", state="account"),
    _page("page change password, wrong current one", "POST", "/account/password", 400,
          "not right", state="member", shows="/account/password",
          form={"current_password": "nope nope nope", "new_password": "a new horse 4242"}),
    _page("page change password, short new one", "POST", "/account/password", 400,
          "at least 12", state="member", shows="/account/password",
          form={"current_password": "correct horse 42", "new_password": "short one"}),
    _page("page change email, wrong password", "POST", "/account/email", 400, "not right",
          state="member", shows="/account/email", keeps='value="new@example.com"',
          form={"password": "nope nope nope", "email": "new@example.com"}),
    _page("page reset request, bad email", "POST", "/password/reset", 400, "valid email",
          shows="/password/reset", form={"email": "ada at example"}),
] + [
    _api(f"api register, {label}", "POST", "/api/v1/users", 400, code, message,
         json={"email": email, "password": password})
    for label, email, password, code, message in [
        ("short password", "new@example.com", "short 1", "weak_password", "at least 12"),
        ("10-character password", "new@example.com", "Password1!", "weak_password",
         "at least 12"),
        ("breached password", "new@example.com", "qwertyuiop123", "weak_password",
         "stolen from other sites"),
        ("password holds the email's name", "correcthorse@example.com", "my correcthorse 1",
         "weak_password", "email address's name"),
        ("password too long", "new@example.com", "long horse " * 20, "invalid_input", "128"),
        ("password with a line break", "new@example.com", "correct\nhorse 42", "invalid_input",
         "printable"),
        ("password a number", "new@example.com", 12345678901, "invalid_input", "text"),
        ("email missing", None, "correct horse 42", "invalid_input", "Email must be text."),
        ("email not an address", "not-an-email", "correct horse 42", "invalid_input", "valid"),
        ("email a list", ["new@example.com"], "correct horse 42", "invalid_input", "text"),
    ]
] + [
    _page("page register, short password", "POST", "/register", 400, "at least 12 characters",
          form={"email": "new@example.com", "password": "short 1"}, shows="/register",
          keeps='value="new@example.com"'),
    _page("page register, breached password", "POST", "/register", 400, "stolen from other",
          form={"email": "new@example.com", "password": "password1234"}, shows="/register"),
    _page("page register, bad email", "POST", "/register", 400, "Enter a valid email address.",
          form={"email": "ada at example", "password": "correct horse 42"}, shows="/register"),
] + [
    _api(f"api login, {label}", "POST", "/api/v1/session/login", 401, "invalid_credentials",
         CREDENTIALS, json=body, state="account")
    for label, body in [
        ("wrong email", {"email": "nobody@example.com", "password": "correct horse 42"}),
        ("wrong password", {"email": "ada@example.com", "password": "wrong horse 42"}),
        ("no password", {"email": "ada@example.com"}),
        ("password a number", {"email": "ada@example.com", "password": 42}),
    ]
] + [
    _page(f"page login, {label}", "POST", "/login", 401, CREDENTIALS, form=form, shows="/login",
          keeps=f'value="{form["email"]}"', state="account")
    for label, form in [
        ("wrong email", {"email": "nobody@example.com", "password": "correct horse 42"}),
        ("wrong password", {"email": "ada@example.com", "password": "wrong horse 42"}),
        ("empty password", {"email": "ada@example.com", "password": ""}),
    ]
]

CATALOGUE = [
    case
    for query, status, code, message in [
        ("page=0", 400, "invalid_input", "Page must be at least 1."),
        ("page=-1", 400, "invalid_input", "Page must be a whole number."),
        ("page=x", 400, "invalid_input", "Page must be a whole number."),
        ("page=1.5", 400, "invalid_input", "Page must be a whole number."),
        ("page=", 400, "invalid_input", "Page must be a whole number."),
        ("page=99999999999999999999", 400, "invalid_input", WINDOW + " (up to page 416 at 24"),
        ("page=417", 400, "invalid_input", WINDOW + " (up to page 416 at 24 per page). Narrow"),
        ("per_page=96&page=105", 400, "invalid_input", WINDOW + " (up to page 104 at 96"),
        ("per_page=12&page=834", 400, "invalid_input", "up to page 833 at 12 per page"),
        ("per_page=0", 400, "invalid_input", PER_PAGE),
        ("per_page=-1", 400, "invalid_input", "Per page must be a whole number."),
        ("per_page=x", 400, "invalid_input", "Per page must be a whole number."),
        ("per_page=10", 400, "invalid_input", PER_PAGE),
        ("per_page=25", 400, "invalid_input", PER_PAGE),
        ("per_page=100", 400, "invalid_input", PER_PAGE),
        ("per_page=101", 400, "invalid_input", PER_PAGE),
        ("per_page=99999999999999999999", 400, "invalid_input", PER_PAGE),
        ("page=99", 404, "not_found", "Page 99 does not exist; the last page is 2."),
        ("per_page=12&page=5", 404, "not_found", "the last page is 3"),
        ("per_page=96&page=104", 404, "not_found", "Page 104 does not exist; the last page is 1."),
        ("category=garden", 404, "not_found", "There is no category 'garden'."),
        ("q=" + "a" * 101, 400, "invalid_input", "limited to 100 characters"),
        ("q=" + "+".join("abcdefghi"), 400, "invalid_input", "at most 8 words"),
    ]
    for case in (
        _api(f"api products?{query[:30]}", "GET", f"/api/v1/products?{query}", status, code,
             message),
        _page(f"page grid?{query[:30]}", "GET", f"/?{query}", status, message, shows="/"),
    )
]

CHECKOUT = [
    _api(f"api checkout, {label}", "POST", "/api/v1/orders", 400, "invalid_input", message,
         json=body, headers=headers, state="member")
    for label, body, headers, message in [
        ("no Idempotency-Key", {"shipping": SHIPPING}, {}, "Idempotency-Key is required"),
        ("blank Idempotency-Key", {"shipping": SHIPPING}, {"Idempotency-Key": "  "},
         "Idempotency-Key is required"),
        ("Idempotency-Key too long", {"shipping": SHIPPING}, {"Idempotency-Key": "k" * 101},
         "at most 100"),
        ("no shipping", {}, KEY, "Enter the name to ship to."),
        ("shipping a list", {"shipping": ["Ada", "1 Analytical St"]}, KEY, "Enter the name"),
        ("no name", {"shipping": {"address": "1 Analytical St"}}, KEY, "Enter the name"),
        ("blank name", {"shipping": {**SHIPPING, "name": "   "}}, KEY, "Enter the name"),
        ("name a number", {"shipping": {**SHIPPING, "name": 7}}, KEY, "Enter the name"),
        ("name too long", {"shipping": {**SHIPPING, "name": "n" * 201}}, KEY, "200 characters"),
        ("no address", {"shipping": {"name": "Ada"}}, KEY, "Enter the shipping address."),
        ("address too long", {"shipping": {**SHIPPING, "address": "a" * 1001}}, KEY, "1000"),
        ("no body", None, KEY, "Send a JSON object"),
    ]
] + [
    _api("api checkout, empty cart", "POST", "/api/v1/orders", 400, "empty_cart",
         "Your cart is empty.", json={"shipping": SHIPPING}, headers=KEY, state="member_empty"),
    # A guest checks out with an e-mail address (issue 10); without one, nothing is ordered.
    _api("api checkout, guest without email", "POST", "/api/v1/orders", 400, "invalid_input",
         json={"shipping": SHIPPING}, headers=KEY),
    _api("api checkout, guest with a bad email", "POST", "/api/v1/orders", 400,
         "invalid_input", json={"shipping": SHIPPING, "email": "not-an-address"}, headers=KEY),
    _page("page checkout, guest without email", "POST", "/checkout", 400, "mail",
          form={**SHIPPING, "idempotency_key": "order-1"}, shows="/checkout",
          keeps="1 Analytical St", state="visitor"),
] + [
    _page(f"page checkout, {label}", "POST", "/checkout", 400, message,
          form={**SHIPPING, "idempotency_key": "order-1", **fields}, shows=shows,
          keeps=keeps, state=state)
    for label, fields, message, shows, keeps, state in [
        ("no name", {"name": ""}, "Enter the name to ship to.", "/checkout", "1 Analytical St",
         "member"),
        ("blank address", {"address": "  "}, "Enter the shipping address.", "/checkout",
         'value="Ada Lovelace"', "member"),
        ("name too long", {"name": "n" * 201}, "200 characters", "/checkout", None, "member"),
        ("no Idempotency-Key", {"idempotency_key": ""}, "Idempotency-Key is required",
         "/checkout", 'value="Ada Lovelace"', "member"),
        ("empty cart", {}, "Your cart is empty.", None, None, "member_empty"),
        ("empty cart and no name", {"name": ""}, "Enter the name to ship to.", None, None,
         "member_empty"),
    ]
]

ORDERS = [
    _api("api another shopper's order", "GET", "/api/v1/orders/{order}", 404, "not_found",
         "There is no order", state="others_order"),
    _page("page another shopper's order", "GET", "/orders/{order}", 404, "There is no order",
          state="others_order"),
    _api("api unknown order", "GET", "/api/v1/orders/99999", 404, "not_found", state="member"),
    _api("api orders, logged out", "GET", "/api/v1/orders", 401, "login_required"),
    # Without the session that placed it or its access token, an order is not found.
    _api("api an order, logged out", "GET", "/api/v1/orders/1", 404, "not_found"),
    _api("api another shopper's order, wrong token", "GET", "/api/v1/orders/{order}?token=x",
         404, "not_found", state="others_order"),
    _api("webhook, no signature", "POST", "/api/v1/payments/webhook/test", 400,
         "invalid_notification", json={"id": "evt_1"}, token="no"),
    _api("webhook, unknown provider", "POST", "/api/v1/payments/webhook/nope", 404, "not_found",
         json={}, token="no"),
    _api("api method not allowed", "PATCH", "/api/v1/cart", 405, "method_not_allowed"),
]

# fmt: on

CASES = IDS + QUANTITIES + BODIES + SESSIONS + ACCOUNTS + CATALOGUE + CHECKOUT + ORDERS


# -- the steps ---------------------------------------------------------------------------------


def prepare(app: Flask, state: str) -> tuple[Shopper, dict[str, int]]:
    """A shopper with two kettles in the cart, and around them:

    visitor       nothing else
    account       ada@example.com exists (registered from another browser)
    member        the shopper is logged in as ada@example.com
    member_empty  logged in, nothing in the cart
    others_order  logged in, and bob@example.com has placed an order (``{order}``)
    """
    names: dict[str, int] = {}
    if state == "account":
        assert Shopper(app.test_client(), app).register().status_code == 303
    if state == "others_order":
        bob = Shopper(app.test_client(), app)
        assert bob.register("bob@example.com").status_code == 303
        assert bob.add(MUG).status_code == 303
        placed = bob.api(
            "POST", "/orders", json={"shipping": SHIPPING}, headers={"Idempotency-Key": "bob"}
        )
        assert placed.status_code == 201
        names["order"] = placed.get_json()["order"]["id"]
    shopper = Shopper(app.test_client(), app)
    if state in ("member", "member_empty", "others_order"):
        assert shopper.register().status_code == 303
    if state != "member_empty":
        assert shopper.add(KETTLE, 2).status_code == 303
    return shopper, names


def altered(cookie: str, how: str) -> str:
    if how == "malformed":
        return cookie[:-1] + "."
    # Well-formed but not issued by the server: the id with its last character changed.
    session_id, rest = cookie.split(".", 1)
    return session_id[:-1] + ("A" if session_id[-1] != "A" else "B") + "." + rest


def send(app: Flask, shopper: Shopper, case: Case, names: dict[str, int]) -> TestResponse:
    browser = shopper.client
    if case.cookie is not None:
        browser = app.test_client()
        browser.set_cookie(shopper.cookie_name, altered(shopper.cookie, case.cookie))
    token = {
        "own": shopper.csrf,
        "forged": lambda: "forged-token",
        "other": lambda: Shopper(app.test_client(), app).csrf(),
        "no": lambda: None,
    }[case.token]()
    path = case.path.format(**names)
    headers = dict(case.headers)
    if case.api:
        if token is not None:
            headers["X-CSRF-Token"] = token
        body = {"json": case.json} if case.body is None else {"data": case.body}
        return browser.open(path, method=case.method, headers=headers, **body)
    if case.method == "GET":
        return browser.open(path, method="GET", headers=headers)
    form = dict(case.form or {})
    if token is not None:
        form["csrf_token"] = token
    return browser.open(path, method=case.method, headers=headers, data=form)


def database_state(app: Flask) -> dict[str, Any]:
    """Row counts of what a request could add, and the stock it could take (plain SQL: each
    case has an engine of its own, so SQLAlchemy's compiled-statement cache never warms)."""
    with app.extensions["shop"].engines.primary.connect() as conn:
        counts = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM orders),"
                " (SELECT count(*) FROM order_lines)"
            )
        ).one()
        stock = conn.execute(text("SELECT id, stock FROM products ORDER BY id"))
        return {
            **dict(zip(("users", "orders", "order_lines"), counts, strict=True)),
            "stock": {row.id: row.stock for row in stock},
        }


def snapshot(app: Flask, shopper: Shopper) -> dict[str, Any]:
    """Everything a request could change, as the shopper and the database see it."""
    return {
        "cart": shopper.cart(),
        "user": shopper.client.get("/api/v1/session").get_json()["user"],
        **database_state(app),
    }


def error_texts(response: TestResponse) -> list[str]:
    """The error messages a page shows (``class="error ..."``), unescaped."""
    page = response.get_data(as_text=True)
    return [
        html.unescape(text).strip()
        for text in re.findall(r'<p class="error[^"]*"[^>]*>(.*?)</p>', page, re.S)
    ]


def check_api_error(response: TestResponse, case: Case) -> None:
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == case.code
    assert isinstance(error["message"], str) and error["message"].strip()
    assert case.message in error["message"]


def check_page_error(response: TestResponse, case: Case) -> None:
    assert response.mimetype == "text/html"
    page = html.unescape(response.get_data(as_text=True))
    assert any(case.message in text for text in error_texts(response)), error_texts(response)
    if case.shows is not None:
        assert f'action="{case.shows}"' in page
    if case.keeps is not None:
        assert case.keeps in page


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedShop:
    """A state as :func:`prepare` left it: the database, every Redis key and the shopper's
    cookie, and its :func:`snapshot`. Each case starts from a copy, as if it had prepared the
    state itself, so the snapshot before its request is that one."""

    database: Path
    keys: list[tuple[bytes, int, bytes]]
    cookie: str
    names: dict[str, int]
    before: dict[str, Any]


@pytest.fixture(scope="module")
def prepared_shops() -> dict[str, PreparedShop]:
    return {}


def shop_in_state(
    state: str, make_app, sqlite_url: str, server: fakeredis.FakeServer, kept: dict, folder: Path
) -> tuple[Flask, Shopper, dict[str, int], dict[str, Any]]:
    """A fresh app whose database and Redis are a copy of ``state``, prepared once per module
    (preparing is most of a case's cost: sign-ups, logins, an order), and its snapshot."""
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    redis_bytes = fakeredis.FakeRedis(server=server)
    if state not in kept:
        app = make_app()
        shopper, names = prepare(app, state)
        before = snapshot(app, shopper)
        copy = folder / f"{state}.db"
        with closing(sqlite3.connect(database)) as live, closing(sqlite3.connect(copy)) as target:
            live.backup(target)  # the WAL's pages too
        keys = [
            (k, max(redis_bytes.pttl(k), 0), redis_bytes.dump(k)) for k in redis_bytes.scan_iter()
        ]
        assert shopper.cookie is not None
        kept[state] = PreparedShop(copy, keys, shopper.cookie, names, before)
        return app, shopper, names, before
    prepared = kept[state]
    shutil.copyfile(prepared.database, database)
    for key, ttl, value in prepared.keys:
        redis_bytes.restore(key, ttl, value)
    app = make_app()
    shopper = Shopper(app.test_client(), app)
    shopper.client.set_cookie(shopper.cookie_name, prepared.cookie)
    return app, shopper, dict(prepared.names), prepared.before


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    make_app, sqlite_url, fake_redis_server, prepared_shops, tmp_path_factory, case: Case
):
    app, shopper, names, before = shop_in_state(
        case.state,
        make_app,
        sqlite_url,
        fake_redis_server,
        prepared_shops,
        tmp_path_factory.mktemp("prepared"),
    )

    response = send(app, shopper, case, names)

    assert response.status_code == case.status, response.get_data(as_text=True)[:500]
    if case.api:
        check_api_error(response, case)
    else:
        check_page_error(response, case)
    assert snapshot(app, shopper) == before
    if case.cookie is not None:  # nor did the altered cookie get a cart or a login of its own
        browser = app.test_client()
        browser.set_cookie(shopper.cookie_name, altered(shopper.cookie, case.cookie))
        assert browser.get("/api/v1/cart").get_json()["count"] == 0
        assert browser.get("/api/v1/session").get_json()["user"] is None


def test_no_request_in_the_table_makes_a_500(make_app, sqlite_url, tmp_path):
    """Whatever each case expects, none is answered with a server error. The table test shows
    that no case changes anything, so the cases of one state share one prepared shop (a copy of
    the freshly seeded database with a Redis of its own)."""
    seeded = sqlite_url.removeprefix("sqlite:///")
    server_errors = {}
    for state in sorted({case.state for case in CASES}):
        database = tmp_path / f"{state}.db"
        shutil.copyfile(seeded, database)
        app = make_app(
            database_url=f"sqlite:///{database}", redis_client=fake_client(fakeredis.FakeServer())
        )
        shopper, names = prepare(app, state)
        for case in (case for case in CASES if case.state == state):
            status = send(app, shopper, case, names).status_code
            if status >= 500:
                server_errors[case.id] = status
    assert server_errors == {}


# -- what a table row cannot say ---------------------------------------------------------------


def test_wrong_email_and_wrong_password_get_the_same_answer(app):
    Shopper(app.test_client(), app).register()
    shopper = Shopper(app.test_client(), app)
    wrong_email = {"email": "nobody@example.com", "password": "correct horse 42"}
    wrong_password = {"email": "ada@example.com", "password": "wrong horse 42"}

    api = [shopper.api("POST", "/session/login", json=b) for b in (wrong_email, wrong_password)]
    assert [r.status_code for r in api] == [401, 401]
    assert api[0].get_json() == api[1].get_json()

    pages = [shopper.login(**body) for body in (wrong_email, wrong_password)]
    assert [r.status_code for r in pages] == [401, 401]
    assert error_texts(pages[0]) == error_texts(pages[1]) == [CREDENTIALS]


@pytest.mark.parametrize("how", ["malformed", "unknown"])
@pytest.mark.parametrize("path", ["/", "/cart", f"/products/{KETTLE}", "/api/v1/cart"])
def test_a_get_with_an_altered_cookie_is_a_new_visitor(app, path: str, how: str):
    shopper = Shopper(app.test_client(), app)
    shopper.register()
    shopper.add(KETTLE, 2)
    before = snapshot(app, shopper)
    browser = app.test_client()
    cookie = altered(shopper.cookie, how)
    browser.set_cookie(shopper.cookie_name, cookie)

    response = browser.get(path)

    assert response.status_code == 200
    assert browser.get("/api/v1/cart").get_json() == {
        "items": [],
        "total_cents": 0,
        "count": 0,
        "price_changes": [],
        "unavailable": [],
    }
    assert browser.get("/api/v1/session").get_json()["user"] is None
    issued = browser.get_cookie(shopper.cookie_name).value
    assert issued != cookie  # only ids the server issued are used
    assert snapshot(app, shopper) == before


@pytest.mark.parametrize("path", ["/orders"])
def test_order_pages_send_a_logged_out_shopper_to_login(shopper, path: str):
    shopper.add(KETTLE)
    page = shopper.client.get(path)
    assert page.status_code == 303
    assert page.headers["Location"] == f"/login?next={path}"


def test_a_guest_checkout_without_an_email_orders_nothing(app, shopper):
    shopper.add(KETTLE, 2)
    before = snapshot(app, shopper)
    page = shopper.checkout()
    assert page.status_code == 400 and 'name="email"' in page.get_data(as_text=True)
    assert snapshot(app, shopper) == before
    assert shopper.client.get("/orders/1").status_code == 404  # no order, no login redirect


def test_checkout_shows_the_error_next_to_the_field(app, shopper):
    shopper.register()
    shopper.add(KETTLE)
    page = shopper.checkout(name="", address="1 Analytical St").get_data(as_text=True)
    field_then_error = r'<input id="name" name="name"[^>]*>\s*<p class="error field-error"[^>]*>'
    assert re.search(field_then_error + r"Enter the name to ship to\.</p>", page)
    assert page.count('class="error') == 1  # not also at the top
    assert ">1 Analytical St</textarea>" in page


def test_the_add_form_shown_again_returns_where_the_first_would_have(app, shopper):
    refused = shopper.post_form(
        "/cart/add", {"product_id": KETTLE, "quantity": "0", "next": "/?page=2"}
    )
    assert refused.status_code == 400
    assert 'name="next" value="/?page=2"' in refused.get_data(as_text=True)

    refused = shopper.post_form("/cart/add", {"product_id": KETTLE, "quantity": "0"})
    assert f'name="next" value="/products/{KETTLE}"' in refused.get_data(as_text=True)
    again = shopper.post_form(
        "/cart/add", {"product_id": KETTLE, "quantity": "1", "next": f"/products/{KETTLE}"}
    )
    assert again.status_code == 303
    back = urlsplit(again.headers["Location"])  # with ?added=, which says what was added
    assert back.path == f"/products/{KETTLE}" and list(parse_qs(back.query)) == ["added"]


# -- text the database could not store, tokens that are not ASCII ---------------------------------


@pytest.mark.parametrize("where", ["header", "form"])
def test_a_non_ascii_csrf_token_is_refused_not_a_500(app, shopper, where: str):
    shopper.add(KETTLE, 2)
    before = snapshot(app, shopper)
    if where == "header":
        response = shopper.client.post(
            "/api/v1/cart/items", json=_add(1), headers={"X-CSRF-Token": "t\xe9t\xe9"}
        )
    else:
        response = shopper.client.post("/cart/add", data={**_form("1"), "csrf_token": "été"})
    assert response.status_code == 403
    assert snapshot(app, shopper) == before


def refuse_nul_like_postgresql(app: Flask) -> None:
    """Make the SQLite primary refuse NUL characters in parameters as psycopg2 does."""

    def check(_conn, _cursor, _statement, parameters, _context, _executemany) -> None:
        rows = parameters if isinstance(parameters, list) else [parameters]
        for row in rows:
            values = row.values() if isinstance(row, dict) else row or ()
            if any(isinstance(value, str) and "\x00" in value for value in values):
                raise ValueError("A string literal cannot contain NUL (0x00) characters.")

    event.listen(app.extensions["shop"].engines.primary, "before_cursor_execute", check)


@pytest.mark.parametrize("what", ["search", "register", "login", "checkout"])
def test_a_nul_character_is_refused_not_a_500(app, what: str):
    refuse_nul_like_postgresql(app)
    shopper, _ = prepare(app, "account" if what in ("register", "login") else "member")
    before = snapshot(app, shopper)
    response = {
        "search": lambda: shopper.client.get("/api/v1/products?q=tea%00pot"),
        "register": lambda: shopper.sign_up("nul\x00@example.com"),
        "login": lambda: shopper.login("ada\x00@example.com"),
        "checkout": lambda: shopper.checkout(name="Ada\x00Lovelace"),
    }[what]()
    assert 400 <= response.status_code < 500
    assert snapshot(app, shopper) == before


def test_api_errors_name_the_field_and_unknown_routes_are_404_not_403(shopper):
    refused = shopper.api("POST", "/cart/items", json={"product_id": 1, "quantity": 0})
    assert refused.get_json()["error"]["field"] == "quantity"
    assert shopper.client.post("/api/v1/no-such-thing").status_code == 404
    assert shopper.client.post("/healthz").status_code == 405
    logged_out = shopper.api(
        "POST", "/orders", json={"shipping": "nonsense"}, headers={"Idempotency-Key": "k"}
    )
    assert logged_out.status_code == 400  # a guest's order, refused for its shipping


def test_refused_input_is_one_log_line_without_a_traceback(app, caplog):
    shopper = Shopper(app.test_client(), app)
    body = '{"email": ' + "[" * 800 + "]" * 800 + "}"
    with caplog.at_level("INFO"):
        token = shopper.csrf()
        response = shopper.client.post(
            "/api/v1/users", data=body, headers={**JSON, "X-CSRF-Token": token}
        )
    assert response.status_code == 400
    lines = [r for r in caplog.records if r.name.startswith("shop")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None
    assert lines[0].getMessage() == "refused POST /api/v1/users: 400 invalid_input"


# -- paging: canonical page sizes, a result window ----------------------------------------------


def test_a_refused_page_names_the_field_and_costs_no_query_and_no_cache_entry(
    app, fake_redis_server
):
    redis = fake_client(fake_redis_server)
    client = app.test_client(use_cookies=False)
    client.get("/api/v1/categories")  # the grid's navigation, shown with the error
    keys = set(redis.scan_iter("*"))
    counter = StatementCounter(app.extensions["shop"].engines.primary)
    for query, named in [
        ("per_page=10", "per_page"),
        ("per_page=100&q=tea", "per_page"),
        ("page=417", "page"),
        ("per_page=96&page=105&category=kitchen", "page"),
    ]:
        refused = client.get(f"/api/v1/products?{query}")
        assert refused.status_code == 400
        assert refused.get_json()["error"]["field"] == named
        assert client.get(f"/?{query}").status_code == 400
    assert counter.count == 0
    assert set(redis.scan_iter("*")) == keys


def test_two_spellings_of_one_page_share_one_cache_entry(app, fake_redis_server):
    redis = fake_client(fake_redis_server)
    client = app.test_client(use_cookies=False)
    counter = StatementCounter(app.extensions["shop"].engines.primary)
    first = client.get("/api/v1/products?q=Blue%20%20KETTLE&category=kitchen&page=01&per_page=024")
    queries = counter.count
    again = client.get("/api/v1/products?q=+blue+kettle+&category=kitchen&page=1")
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json()
    assert counter.count == queries  # the second spelling was a hit
    lists = [key for key in redis.scan_iter("*cat:{l:*") if not key.endswith(":lock")]
    assert len(lists) == 1, lists


def test_the_pager_stops_at_the_result_window_and_says_how_to_see_the_rest(make_app):
    app = make_app(per_page_choices=(12, 24), per_page_default=12, max_result_window=24)
    client = app.test_client()
    first = client.get("/?per_page=012").get_data(as_text=True)  # 33 products: 3 pages of 12
    # Links are canonical: the default page size is not spelled out (one page, one URL).
    assert 'href="/?page=2"' in first and "Narrow the search" not in first
    last = client.get("/?page=2").get_data(as_text=True)
    assert 'rel="next"' not in last and "Page 2 of" not in last
    assert "Only the first 24 results can be shown (up to page 2 at 12 per page)." in last
    refused = client.get("/?page=3")
    assert refused.status_code == 400
    assert "Narrow the search" in " ".join(error_texts(refused))
    assert client.get("/?per_page=24&page=1").status_code == 200
    assert client.get("/api/v1/products?per_page=24&page=2").status_code == 400
