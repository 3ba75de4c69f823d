"""The audit trail, read-only, with filters (admins)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import render_template, request

from ... import audit
from ...errors import InvalidInput
from ..context import services
from . import add_section, admin_only, bp

PAGE_SIZE = 50

add_section("admin.audit_log", "Audit trail", order=90, admin=True)


def _day(name: str) -> datetime | None:
    text = request.args.get(name, "").strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput("Dates are written like 2026-12-03.", field=name) from None


@bp.get("/audit")
@admin_only
def audit_log():
    args = request.args
    until = _day("until")
    before_id = args.get("before", "")
    filters = {
        "actor": args.get("actor", "").strip() or None,
        "entity": args.get("entity", "").strip() or None,
        "entity_id": args.get("entity_id", "").strip() or None,
        "action": args.get("action", "").strip() or None,
    }
    engine = services().engines.primary
    entries = audit.entries(
        engine,
        **filters,
        since=_day("since"),
        until=until + timedelta(days=1) if until else None,
        before_id=int(before_id) if before_id.isdigit() and len(before_id) < 10 else None,
        limit=PAGE_SIZE + 1,
    )
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    return render_template(
        "admin/audit.html",
        entries=entries,
        more=more,
        actions=audit.actions(engine),
        args=args,
    )
