"""Money in 64-bit columns on PostgreSQL (migration 0005): an INTEGER total overflowed at
21,474,836.47, so three items at 10,000,000.00 were a 500 at checkout."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from tests.support import KETTLE, Shopper


def _order(shopper: Shopper, key: str):
    return shopper.api(
        "POST",
        "/orders",
        json={"shipping": {"name": "Ada Lovelace", "address": "1 Analytical St"}},
        headers={"Idempotency-Key": key},
    )


def test_money_columns_are_bigint(pg_url):
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        types = dict(
            conn.execute(
                text(
                    "SELECT table_name || '.' || column_name, data_type "
                    "FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND column_name IN "
                    "('price_cents', 'total_cents', 'unit_price_cents', 'line_total_cents')"
                )
            ).all()
        )
    engine.dispose()
    assert types == {
        "products.price_cents": "bigint",
        "orders.total_cents": "bigint",
        "order_lines.unit_price_cents": "bigint",
        "order_lines.line_total_cents": "bigint",
    }


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
    order = placed.get_json()
    assert order["total_cents"] == 3_000_000_000
    assert order["lines"][0]["unit_price_cents"] == 1_000_000_000
    assert order["lines"][0]["line_total_cents"] == 3_000_000_000
    assert shopper.client.get(f"/api/v1/orders/{order['id']}").get_json() == order
