"""Health endpoints for the load balancer and the operator."""

from __future__ import annotations

from flask import Blueprint, jsonify

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
    try:
        services().redis.ping()
        redis_state: dict = {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        redis_state = {"ok": False, "error": type(exc).__name__}
    ready = bool(databases["primary"]["ok"] and redis_state["ok"])
    body = {
        "status": "ready" if ready else "not ready",
        "instance": services().settings.instance_name,
        "primary": databases.pop("primary"),
        "redis": redis_state,
        "replicas": databases,
    }
    return jsonify(body), 200 if ready else 503
