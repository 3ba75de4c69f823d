"""Schema migrations with Alembic, run programmatically on one of the shop's engines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # configparser treats % as interpolation; URLs carry %-escapes (passwords, options).
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    return config


@contextmanager
def _migration(engine: Engine) -> Iterator[Config]:
    """A transaction to migrate in, handed to Alembic through its config."""
    config = alembic_config(engine)
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # SQLite alters a table by copying it; with foreign keys enforced, copying a
            # referenced table fails. The pragma only works outside a transaction.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()  # end SQLAlchemy's autobegun (driver-level empty) transaction
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # Instances starting together: one migrates, the others wait, then no-op.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
                config.attributes["connection"] = conn
                yield config
        finally:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start and from every instance."""
    with _migration(engine) as config:
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    with _migration(engine) as config:
        command.downgrade(config, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
