"""Operator commands: ``flask --app shop db upgrade``, ``seed``, ``product add|set``,
``mail deliver|status``, ``order ship|cancel|deliver|expire``, ``user grant``,
``redis upgrade-keys``."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from . import migrate, money, outbox
from .catalogue import save_product
from .errors import InvalidInput, ShopError
from .redis_client import RedisUnavailable, is_cluster
from .redis_keys import upgrade_keys
from .seed import seed_catalogue
from .services import Services

db_cli = AppGroup("db", help="Database schema (Alembic migrations).")
product_cli = AppGroup("product", help="Add or change products; the cache is invalidated.")
mail_cli = AppGroup("mail", help="The mail outbox: order mails waiting to be sent.")
user_cli = AppGroup("user", help="Accounts' roles: make the first admin of the back office.")
order_cli = AppGroup("order", help="Ship, cancel (refund), deliver or expire orders.")
redis_cli = AppGroup("redis", help="Redis keys: carry sessions and carts to today's layout.")


def _services() -> Services:
    return current_app.extensions["shop"]


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the primary database to REVISION (default: head)."""
    engine = _services().engines.primary
    migrate.upgrade(engine, revision)
    click.echo(f"database at revision {migrate.current(engine)}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the primary database down to REVISION (for example: base)."""
    engine = _services().engines.primary
    migrate.downgrade(engine, revision)
    click.echo(f"database at revision {migrate.current(engine)}")


@db_cli.command("current")
def db_current() -> None:
    """Print the schema revision of the primary database."""
    click.echo(migrate.current(_services().engines.primary) or "empty (no revision)")


@click.command("seed")
@with_appcontext
@click.option(
    "--products",
    "count",
    type=click.IntRange(1, 10_000_000),
    default=1000,
    show_default=True,
    help="How many demo products to add.",
)
@click.option("--batch-size", type=click.IntRange(100, 100_000), default=5000, show_default=True)
def seed_command(count: int, batch_size: int) -> None:
    """Add demo categories and COUNT products, with a progress bar."""
    services = _services()
    with click.progressbar(
        length=count, label="seeding products", show_pos=True, show_eta=True
    ) as bar:
        inserted = seed_catalogue(
            services.engines.primary, count, batch_size=batch_size, progress=bar.update
        )
    _invalidate(services, [], structural=True)
    click.echo(f"added {inserted} products")


def _price_option(text: str | None) -> int | None:
    """The ``--price`` option in cents (shop.money.parse_price), refused as a bad parameter."""
    if text is None:
        return None
    try:
        return money.parse_price(text)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint="--price") from None


@product_cli.command("add")
@click.option("--name", required=True)
@click.option("--category", "category_slug", required=True, help="Category slug (created if new).")
@click.option("--price", required=True, help="Price like 12.34")
@click.option("--stock", type=click.IntRange(0), default=0, show_default=True)
@click.option("--description", default="")
def product_add(name: str, category_slug: str, price: str, stock: int, description: str) -> None:
    """Add a product."""
    product_id = _save(
        None,
        structural=True,
        name=name,
        description=description,
        price_cents=_price_option(price),
        stock=stock,
        category_slug=category_slug,
    )
    click.echo(f"added product {product_id}")


@product_cli.command("set")
@click.argument("product_id", type=click.IntRange(1))
@click.option("--name")
@click.option("--category", "category_slug")
@click.option("--price", help="Price like 12.34")
@click.option("--stock", type=click.IntRange(0))
@click.option("--description")
def product_set(product_id: int, name, category_slug, price, stock, description) -> None:
    """Change a product's name, category, price, stock or description."""
    if all(v is None for v in (name, category_slug, price, stock, description)):
        raise click.UsageError("nothing to change: give --name, --price, --stock, ...")
    _save(
        product_id,
        structural=category_slug is not None,
        name=name,
        description=description,
        price_cents=_price_option(price),
        stock=stock,
        category_slug=category_slug,
    )
    click.echo(f"updated product {product_id}")


def _save(product_id: int | None, *, structural: bool, **fields) -> int:
    """Write on the primary, commit, then invalidate what the change touched."""
    services = _services()
    try:
        with services.engines.primary.begin() as conn:
            product_id = save_product(conn, product_id=product_id, **fields)
    except ShopError as exc:
        raise click.ClickException(exc.message) from None
    _invalidate(services, [product_id], structural=structural)
    return product_id


def _invalidate(services: Services, product_ids: list[int], *, structural: bool) -> None:
    try:
        services.catalogue.invalidate(product_ids, structural=structural)
    except RedisUnavailable as exc:
        click.echo(
            f"warning: the cache could not be invalidated ({exc}); cached entries expire "
            f"within {services.settings.catalogue_cache_ttl} s",
            err=True,
        )
    else:
        click.echo("catalogue cache invalidated")


@mail_cli.command("deliver")
def mail_deliver() -> None:
    """Send every mail that is due now, once (the instances' workers do this on their own;
    this is for cron, or after fixing the mail server). Exit status 1 if any failed for good."""
    report = _services().mail_delivery().run_once()
    click.echo(
        f"sent {report.sent}, to retry later {report.retrying}, failed for good {report.failed}"
    )
    if report.failed:
        raise SystemExit(1)


@mail_cli.command("status")
def mail_status() -> None:
    """How many mails are pending, being sent, sent and failed."""
    found = outbox.counts(_services().engines.primary)
    click.echo(", ".join(f"{status} {n}" for status, n in found.items()))


def _now(services: Services):
    from .order_lifecycle import utcnow

    return utcnow(services.clock)


@order_cli.command("ship")
@click.argument("order_id", type=click.IntRange(1))
@click.option("--tracking", help="The carrier's tracking number.")
def order_ship(order_id: int, tracking: str | None) -> None:
    """Mark a paid order shipped."""
    from .payments import ship_order

    services = _services()
    try:
        ship_order(
            services.engines.primary,
            order_id,
            now=_now(services),
            tracking=tracking,
            listeners=services.order_listeners,
        )
    except ShopError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"order {order_id} shipped")


@order_cli.command("cancel")
@click.argument("order_id", type=click.IntRange(1))
def order_cancel(order_id: int) -> None:
    """Cancel a paid order: refunded through the provider, its stock returned."""
    from .payments import cancel_order

    services = _services()
    try:
        restocked = cancel_order(
            services.engines.primary,
            services.payment_provider,
            order_id,
            now=_now(services),
            listeners=services.order_listeners,
        )
    except ShopError as exc:
        raise click.ClickException(exc.message) from None
    _invalidate(services, restocked, structural=False)
    click.echo(f"order {order_id} cancelled and refunded")


@order_cli.command("deliver")
@click.argument("order_id", type=click.IntRange(1))
def order_deliver(order_id: int) -> None:
    """Mark a shipped order delivered."""
    from .payments import deliver_order

    services = _services()
    try:
        deliver_order(
            services.engines.primary,
            order_id,
            now=_now(services),
            listeners=services.order_listeners,
        )
    except ShopError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"order {order_id} delivered")


@order_cli.command("expire")
def order_expire() -> None:
    """Expire unpaid orders past their hold (safe beside the instances' own sweeps)."""
    from .order_lifecycle import expire_overdue

    services = _services()
    restocked = expire_overdue(
        services.engines.primary, now=_now(services), listeners=services.order_listeners
    )
    if restocked:
        _invalidate(services, restocked, structural=False)
    click.echo(f"stock returned for products: {restocked}")


@user_cli.command("grant")
@click.argument("email")
@click.argument("role", type=click.Choice(["customer", "staff", "admin"]))
def user_grant(email: str, role: str) -> None:
    """Give the account EMAIL the ROLE (recorded in the audit trail as the command line).
    The first admin is made here; then admins grant roles in the back office (/admin/staff)."""
    from . import staff
    from .audit import Actor

    services = _services()
    try:
        with services.engines.primary.begin() as conn:
            member = staff.grant(
                conn, Actor.command_line(), email=email, role=role, at=_now(services)
            )
    except ShopError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{member.email} is now {member.role}")


@redis_cli.command("upgrade-keys")
def redis_upgrade_keys() -> None:
    """Rename sessions and carts kept under the layout before Redis Cluster support (README,
    "Upgrading"); once, after the last old instance stopped."""
    services = _services()
    if is_cluster(services.redis):
        raise click.ClickException("a Redis Cluster holds no keys of the old layout")
    counts = upgrade_keys(services.redis, services.settings.redis_prefix)
    click.echo(f"moved {counts['moved']} keys, dropped {counts['dropped']} already rewritten")


def register_cli(app: Flask) -> None:
    app.cli.add_command(redis_cli)
    app.cli.add_command(user_cli)
    app.cli.add_command(mail_cli)
    app.cli.add_command(order_cli)
    app.cli.add_command(db_cli)
    app.cli.add_command(product_cli)
    app.cli.add_command(seed_command)
