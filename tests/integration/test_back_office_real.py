"""The back office's schema on PostgreSQL: the audit trail is append-only, 0007 goes down and
up, and roles are checked by the database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from shop import audit
from shop.models import audit_log, users


def test_the_audit_trail_refuses_updates_and_deletes(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        audit.record(
            conn,
            audit.Actor.command_line(),
            "product.update",
            entity="product",
            entity_id=1,
            before={"price_cents": 100},
            after={"price_cents": 200},
            at=datetime.now(UTC),
        )
    for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT actor FROM audit_log")).scalar_one() == "command line"
    engine.dispose()


def test_an_unknown_role_is_refused_by_the_database(pg_url):
    engine = create_engine(pg_url)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(users).values(email="x@example.com", password_hash="x", role="king"))
    engine.dispose()


def test_migration_0007_goes_down_and_up(pg_url):
    from shop.migrate import current, downgrade, upgrade

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            insert(audit_log).values(
                at=datetime.now(UTC), actor="command line", action="x", entity="y"
            )
        )
    downgrade(engine, "0006")
    with engine.connect() as conn:
        columns = {
            row[0]
            for row in conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'products' AND table_schema = current_schema()"
                )
            )
        }
    assert "version" not in columns and "archived_at" not in columns
    upgrade(engine)
    assert current(engine) is not None
    with engine.connect() as conn:
        names = conn.execute(text("SELECT name FROM categories ORDER BY position")).scalars()
        ordered = list(names)
        assert ordered == sorted(ordered)
    engine.dispose()
