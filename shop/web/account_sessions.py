"""An account's sessions: see where it is signed in, end one, or log out everywhere."""

from __future__ import annotations

from flask import Blueprint, jsonify, redirect, render_template, request, url_for

from ..errors import NotFound
from ..sessions import SessionSummary
from .context import require_login, services, shop_session

bp = Blueprint("account_sessions", __name__)

_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_device(user_agent: str) -> str:
    """ "Firefox on Android": enough for a person to recognise their own device."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"


def _summaries() -> list[dict]:
    user_id = require_login()
    current = shop_session().ref
    return [
        _summary(session, current=session.ref == current)
        for session in services().sessions.user_sessions(user_id)
    ]


def _summary(session: SessionSummary, *, current: bool) -> dict:
    return {
        "id": session.ref,
        "current": current,
        "device": describe_device(session.user_agent),
        "created": int(session.created),
        "last_seen": int(session.last_seen),
    }


def _end(ref: str) -> None:
    user_id = require_login()
    if ref == shop_session().ref:
        shop_session().log_out()  # this one: an ordinary logout
        return
    if not services().sessions.end_user_session(user_id, ref):
        raise NotFound("There is no such session of your account (it may have ended already).")


def _end_others() -> int:
    return services().sessions.end_user_sessions(require_login(), keep=shop_session().sid)


# -- pages -------------------------------------------------------------------------------


@bp.get("/account/sessions")
def page():
    return render_template(
        "account/sessions.html", sessions=_summaries(), ended=request.args.get("ended")
    )


@bp.post("/account/sessions/end")
def end_one():
    _end(request.form.get("id", ""))
    if shop_session().user_id is None:
        return redirect(url_for("catalogue.grid"), code=303)
    return redirect(url_for("account_sessions.page", ended=1), code=303)


@bp.post("/account/sessions/end-others")
def end_others():
    ended = _end_others()
    return redirect(url_for("account_sessions.page", ended=ended), code=303)


@bp.post("/logout/everywhere")
def logout_everywhere():
    _end_others()
    shop_session().log_out()
    return redirect(url_for("catalogue.grid"), code=303)


# -- API ---------------------------------------------------------------------------------


@bp.get("/api/v1/account/sessions")
def api_list():
    return jsonify({"items": _summaries()})


@bp.delete("/api/v1/account/sessions/<id>")
def api_end(id: str):  # noqa: A002 - the path's name for it, as in docs/api.md
    _end(id)
    return "", 204


@bp.post("/api/v1/account/sessions/end-others")
def api_end_others():
    return jsonify({"ended": _end_others()})
