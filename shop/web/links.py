"""Absolute links for mails: ``SHOP_PUBLIC_URL`` when set, else the URL the request came to.

Without ``SHOP_PUBLIC_URL`` a link follows the request's Host header, which the client
chooses: set it in production (and let the balancer pass only the shop's host names), so that
no one can have a reset link mailed that points elsewhere.
"""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request, url_for

# Where links point when there is neither SHOP_PUBLIC_URL nor a request to follow (a command
# run under ``make run``: shipping an order from the CLI mails its link).
LOCAL_BASE = "http://127.0.0.1:5000"


def public_base(public_url: str | None) -> str:
    """The origin absolute links start with, without a trailing slash."""
    if public_url:
        return public_url.rstrip("/")
    return (request.host_url if has_request_context() else LOCAL_BASE).rstrip("/")


class RequestLinks:
    def __init__(self, public_url: str | None) -> None:
        self.base = public_base(public_url)

    def _url(self, endpoint: str, **values: Any) -> str:
        return self.base + url_for(endpoint, **values)

    def verify(self, token: str) -> str:
        return self._url("account.verify", token=token)

    def reset(self, token: str) -> str:
        return self._url("credentials.reset_password_page", token=token)

    def confirm_email(self, token: str) -> str:
        return self._url("credentials.confirm_email", token=token)

    def reset_request(self) -> str:
        return self._url("credentials.reset_request")

    def login(self) -> str:
        return self._url("account.login")

    def register(self) -> str:
        return self._url("account.register_page")
