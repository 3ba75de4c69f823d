"""``python -m deploy.haproxy`` (``make haproxy-config``): rewrite deploy/compose/haproxy.cfg
from the template, so the committed file is the render tests/deploy/test_compose.py expects."""

from __future__ import annotations

import os

from deploy.haproxy import COMPOSE, COMPOSE_CONFIG, HERE, render


def main() -> None:
    text = render(COMPOSE)
    name = COMPOSE_CONFIG.relative_to(HERE.parents[1])
    if COMPOSE_CONFIG.exists() and COMPOSE_CONFIG.read_text() == text:
        print(f"{name}: unchanged")
        return
    fresh = COMPOSE_CONFIG.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, COMPOSE_CONFIG)  # never a half-written file for compose to mount
    print(f"{name}: rewritten")


if __name__ == "__main__":
    main()
