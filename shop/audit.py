"""The back office's audit trail: every change, who made it and what it was before and after.

:func:`record` is called with the connection of the change itself, so an entry exists exactly
when its change committed. Entries are only ever added: nothing in the shop updates or deletes
one (and on PostgreSQL a trigger refuses it, migration 0007).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from .models import audit_log


@dataclass(frozen=True)
class Actor:
    """Who made a change: a staff account, or the command line (``id`` None)."""

    id: int | None
    email: str
    role: str = "admin"

    @classmethod
    def command_line(cls) -> Actor:
        return cls(None, "command line")


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor: str
    actor_id: int | None
    action: str
    entity: str
    entity_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def changes(self) -> list[tuple[str, Any, Any]]:
        """(field, before, after) for every field either side names, in a stable order."""
        before, after = self.before or {}, self.after or {}
        fields = list(dict.fromkeys([*before, *after]))
        return [(name, before.get(name), after.get(name)) for name in fields]


def diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict, dict]:
    """Only what changed: the fields whose value differs, as they were and as they are."""
    changed = [name for name in after if before.get(name) != after[name]]
    return {n: before.get(n) for n in changed}, {n: after[n] for n in changed}


def _encode(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def record(
    conn: Connection,
    actor: Actor,
    action: str,
    *,
    entity: str,
    entity_id: object = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    at: datetime,
) -> None:
    """Add an entry in the caller's transaction (``action`` like ``product.update``)."""
    conn.execute(
        insert(audit_log).values(
            at=at,
            actor_id=actor.id,
            actor=actor.email,
            action=action,
            entity=entity,
            entity_id=None if entity_id is None else str(entity_id),
            before=_encode(before),
            after=_encode(after),
        )
    )


def entries(
    engine: Engine,
    *,
    actor: str | None = None,
    entity: str | None = None,
    entity_id: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Entry]:
    """Newest first, ``limit`` at a time; ``before_id`` continues after the last one seen
    (keyset paging: the same cost on page 1 and page 1,000)."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if actor:
        query = query.where(audit_log.c.actor == actor.strip().lower())
    if entity:
        query = query.where(audit_log.c.entity == entity)
    if entity_id:
        query = query.where(audit_log.c.entity_id == entity_id)
    if action:
        query = query.where(audit_log.c.action == action)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if until is not None:
        query = query.where(audit_log.c.at < until)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        Entry(
            id=row.id,
            at=row.at,
            actor=row.actor,
            actor_id=row.actor_id,
            action=row.action,
            entity=row.entity,
            entity_id=row.entity_id,
            before=json.loads(row.before) if row.before else None,
            after=json.loads(row.after) if row.after else None,
        )
        for row in rows
    ]


def actions(engine: Engine) -> list[str]:
    """The actions recorded so far (for the filter's choices)."""
    with engine.connect() as conn:
        return list(
            conn.execute(select(audit_log.c.action).distinct().order_by(audit_log.c.action))
            .scalars()
            .all()
        )
