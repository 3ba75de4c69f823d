"""Integration tests run against the real PostgreSQL and Redis servers."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            fixtures = set(getattr(item, "fixturenames", ()))
            if fixtures & {"pg_url", "postgres_server", "make_real_app"}:
                item.add_marker(pytest.mark.postgres)
            if fixtures & {"real_redis", "redis_server", "make_real_app"}:
                item.add_marker(pytest.mark.redis)
