"""Money in 64-bit columns on PostgreSQL (migration 0005): an INTEGER total overflowed at
21,474,836.47, so three items at 10,000,000.00 were a 500 at checkout."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DataError

from tests.support import KETTLE, Shopper


def _order(shopper: Shopper, key: str):
    return shopper.api(
        "POST",
        "/orders",
        json={"shipping": {"name": "Ada Lovelace", "address": "1 Analytical St"}},
        headers={"Idempotency-Key": key},
    )


def _money_types(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "SELECT table_name || '.' || column_name, data_type "
                    "FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND column_name IN "
                    "('price_cents', 'total_cents', 'unit_price_cents', 'line_total_cents')"
                )
            ).all()
        )


def test_migration_0005_makes_money_bigint_and_goes_down_and_up(pg_url):
    from shop.migrate import downgrade, upgrade

    engine = create_engine(pg_url)
    assert set(_money_types(engine).values()) == {"bigint"} and len(_money_types(engine)) == 4
    downgrade(engine, "0003")
    assert set(_money_types(engine).values()) == {"integer"}
    upgrade(engine)
    assert set(_money_types(engine).values()) == {"bigint"}
    with engine.begin() as conn:
        conn.execute(text("UPDATE products SET price_cents = 99999999999 WHERE id = 1"))
    with pytest.raises(DataError):  # an amount INTEGER cannot hold: refused, nothing changed
        downgrade(engine, "0003")
    assert set(_money_types(engine).values()) == {"bigint"}
    engine.dispose()


def test_three_items_at_ten_million_are_one_order_on_postgresql(make_real_app):
    app = make_real_app()
    runner = app.test_cli_runner()
    highest = runner.invoke(args=["product", "set", str(KETTLE), "--price", "999999999.99"])
    assert highest.exit_code == 0, highest.output  # the highest price fits the column
    refused = runner.invoke(args=["product", "set", str(KETTLE), "--price", "1000000000"])
    assert refused.exit_code != 0 and "highest price" in refused.output
    set_price = runner.invoke(args=["product", "set", str(KETTLE), "--price", "10000000.00"])
    assert set_price.exit_code == 0, set_price.output
    shopper = Shopper(app.test_client(), app)
    shopper.register()
    shopper.add(KETTLE, 3)
    placed = _order(shopper, "big")
    assert placed.status_code == 201, placed.get_json()
    order = placed.get_json()["order"]
    assert order["total_cents"] == 3_000_000_000
    assert order["lines"][0]["unit_price_cents"] == 1_000_000_000
    assert order["lines"][0]["line_total_cents"] == 3_000_000_000
    assert shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"] == order
