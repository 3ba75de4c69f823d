"""A demo catalogue, made up deterministically so every instance and every run agree."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from sqlalchemy import Connection, Engine, func, insert, select

from .catalogue import recount_categories
from .models import categories, products

CATEGORIES = [
    ("kitchen", "Kitchen"),
    ("garden", "Garden"),
    ("books", "Books"),
    ("toys", "Toys"),
    ("outdoor", "Outdoor"),
    ("office", "Office"),
    ("audio", "Audio"),
    ("tea-coffee", "Tea & Coffee"),
]
_ADJECTIVES = [
    "Sturdy",
    "Compact",
    "Handmade",
    "Classic",
    "Bright",
    "Quiet",
    "Foldable",
    "Recycled",
    "Vintage",
    "Modern",
    "Rustic",
    "Smart",
    "Cosy",
    "Travel",
    "Heavy-duty",
    "Organic",
]
_NOUNS = {
    "kitchen": ["Kettle", "Chef's Knife", "Cutting Board", "Saucepan", "Mixing Bowl", "Whisk"],
    "garden": ["Trowel", "Watering Can", "Planter", "Pruning Shears", "Hose Reel", "Seed Kit"],
    "books": ["Field Guide", "Cookbook", "Novel", "Atlas", "Sketchbook", "Almanac"],
    "toys": ["Puzzle", "Kite", "Building Set", "Yo-yo", "Board Game", "Spinning Top"],
    "outdoor": ["Tent", "Headlamp", "Water Bottle", "Hammock", "Camp Stove", "Rain Jacket"],
    "office": ["Notebook", "Desk Lamp", "Fountain Pen", "Stapler", "Monitor Stand", "Planner"],
    "audio": ["Headphones", "Speaker", "Turntable", "Microphone", "Radio", "Earbuds"],
    "tea-coffee": ["Teapot", "Coffee Grinder", "French Press", "Tea Tin", "Pour-over Set", "Mug"],
}
_MATERIALS = ["oak", "steel", "ceramic", "bamboo", "linen", "copper", "glass", "wool"]


def demo_products(count: int, seed: int = 42) -> Iterator[dict]:
    """``count`` product rows (category ids are 1-based positions in :data:`CATEGORIES`)."""
    rng = random.Random(seed)
    for i in range(count):
        category_index = i % len(CATEGORIES)
        slug = CATEGORIES[category_index][0]
        noun = rng.choice(_NOUNS[slug])
        adjective = rng.choice(_ADJECTIVES)
        material = rng.choice(_MATERIALS)
        yield {
            "category_id": category_index + 1,
            "name": f"{adjective} {noun}" + (f" No. {i // 96 + 1}" if count > 96 else ""),
            "description": (
                f"A {adjective.lower()} {noun.lower()} made of {material}. "
                f"Built to last, easy to clean, and a favourite in our {slug.replace('-', ' ')} "
                "range."
            ),
            "price_cents": rng.randrange(199, 25000, 50) - 1,
            "stock": rng.choice([0, 2, 3, 5, 12, 25, 40, 80, 150]),
        }


def _ensure_categories(conn: Connection) -> list[int]:
    """Create the demo categories that are missing; their ids in :data:`CATEGORIES` order."""
    existing = set(conn.execute(select(categories.c.slug)).scalars())
    missing = [{"slug": slug, "name": name} for slug, name in CATEGORIES if slug not in existing]
    if missing:
        conn.execute(insert(categories), missing)
    ids = dict(conn.execute(select(categories.c.slug, categories.c.id)).all())
    return [ids[slug] for slug, _ in CATEGORIES]


def seed_catalogue(
    engine: Engine,
    count: int,
    *,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Insert the categories (if missing) and ``count`` demo products, a batch per transaction."""
    with engine.begin() as conn:
        category_ids = _ensure_categories(conn)
    batch: list[dict] = []
    inserted = 0
    for row in demo_products(count):
        row["category_id"] = category_ids[row["category_id"] - 1]
        batch.append(row)
        if len(batch) >= batch_size:
            inserted += _insert_batch(engine, batch, progress)
            batch = []
    if batch:
        inserted += _insert_batch(engine, batch, progress)
    with engine.begin() as conn:
        recount_categories(conn)
    return inserted


def _insert_batch(engine: Engine, batch: list[dict], progress) -> int:
    with engine.begin() as conn:
        conn.execute(insert(products), batch)
    if progress is not None:
        progress(len(batch))
    return len(batch)


def seed_demo_if_empty(engine: Engine, count: int = 96) -> int:
    """Seed a small demo catalogue into an empty database, once even if several instances
    start together (an advisory lock on PostgreSQL; SQLite is one process by definition)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727275)")
        if conn.execute(select(func.count()).select_from(products)).scalar_one():
            return 0
        category_ids = _ensure_categories(conn)
        rows = list(demo_products(count))
        for row in rows:
            row["category_id"] = category_ids[row["category_id"] - 1]
        conn.execute(insert(products), rows)
        recount_categories(conn)
    return len(rows)
