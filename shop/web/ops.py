"""Health endpoints for the load balancer and the operator."""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, jsonify, request

from ..redis_client import redis_status
from .context import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers; says nothing about its dependencies."""
    return jsonify(status="ok", instance=services().settings.instance_name)


@bp.get("/readyz")
def readyz():
    """Ready when the primary and Redis answer; replicas are reported, not required."""
    engines = services().engines
    databases = engines.status()
    redis_state = redis_status(services().redis)
    ready = bool(databases["primary"]["ok"] and redis_state["ok"])
    if not _may_see_details():
        return jsonify(status="ready" if ready else "not ready"), 200 if ready else 503
    body = {
        "status": "ready" if ready else "not ready",
        "instance": services().settings.instance_name,
        "primary": databases.pop("primary"),
        "redis": redis_state,
        "replicas": databases,
    }
    return jsonify(body), 200 if ready else 503


def _may_see_details() -> bool:
    """The balancer and operators (SHOP_READYZ_ALLOW, or the SHOP_READYZ_TOKEN in
    ``X-Readyz-Token``) see which dependency failed; the public sees only the status."""
    settings = services().settings
    token = request.headers.get("X-Readyz-Token", "")
    if (
        settings.readyz_token
        and token.isascii()
        and hmac.compare_digest(token.encode(), settings.readyz_token.encode())
    ):
        return True
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in settings.readyz_allow)
