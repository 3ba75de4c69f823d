"""A demo catalogue, made up deterministically so every instance and every run agree."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import Connection, Engine, insert, select

from .catalogue import recount_categories
from .image_storage import ImageStore
from .images import Variant, make_variants
from .models import categories, product_images, products

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


def seed_demo_if_empty(engine: Engine, count: int = 96, *, images: ImageStore | None = None) -> int:
    """Seed a small demo catalogue into an empty database, once even if several instances
    start together (an advisory lock on PostgreSQL; SQLite is one process by definition).
    With an image store, each product gets its category's demo picture (made and stored
    first: a second instance's copies are the same keys, stored once)."""
    if _has_products(engine):
        return 0
    pictures = store_demo_pictures(images) if images is not None else None
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727275)")
        if _has_products(conn):
            return 0
        category_ids = _ensure_categories(conn)
        rows = list(demo_products(count))
        for row in rows:
            row["category_id"] = category_ids[row["category_id"] - 1]
        conn.execute(insert(products), rows)
        recount_categories(conn)
        if pictures is not None:
            by_category = dict(zip(category_ids, pictures, strict=True))
            ids = conn.execute(select(products.c.id, products.c.category_id)).all()
            conn.execute(
                insert(product_images),
                [
                    {
                        "product_id": product_id,
                        "position": 1,
                        "alt": by_category[category_id][0],
                        "variants": json.dumps([v.as_json() for v in by_category[category_id][1]]),
                    }
                    for product_id, category_id in ids
                ],
            )
    return len(rows)


def _has_products(engine: Engine | Connection) -> bool:
    query = select(products.c.id).limit(1)
    if isinstance(engine, Connection):
        return engine.execute(query).first() is not None
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


# One picture per demo category: a colour, a shape and the category's initial. Made with
# Pillow at start (about 40 ms each), never per product: the 96 demo products share eight.
_PALETTES = [
    ((231, 111, 81), (253, 240, 213)),
    ((42, 157, 143), (233, 245, 219)),
    ((38, 70, 83), (233, 196, 106)),
    ((244, 162, 97), (38, 70, 83)),
    ((106, 76, 147), (241, 231, 254)),
    ((29, 53, 87), (168, 218, 220)),
    ((230, 57, 70), (241, 250, 238)),
    ((96, 108, 56), (254, 250, 224)),
]
_SHAPES = ["circle", "square", "triangle", "diamond"]
_SIZE = (640, 480)


def demo_picture(index: int, initial: str) -> Image.Image:
    """A simple, distinct picture: the ``index``-th palette and shape, with ``initial``."""
    background, foreground = _PALETTES[index % len(_PALETTES)]
    shape = _SHAPES[index % len(_SHAPES)]
    image = Image.new("RGB", _SIZE, background)
    draw = ImageDraw.Draw(image)
    cx, cy, r = _SIZE[0] // 2, _SIZE[1] // 2, 170
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=foreground)
    elif shape == "square":
        draw.rounded_rectangle((cx - r, cy - r, cx + r, cy + r), radius=36, fill=foreground)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=foreground)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=foreground)
    font = ImageFont.load_default(size=150)
    draw.text(
        (cx, cy + 20 if shape == "triangle" else cy),
        initial,
        font=font,
        fill=background,
        anchor="mm",
    )
    return image


def store_demo_pictures(store: ImageStore) -> list[tuple[str, list[Variant]]]:
    """Each demo category's picture (alternative text, variants), its variants stored."""
    pictures = []
    for index, (_slug, name) in enumerate(CATEGORIES):
        variants = make_variants(demo_picture(index, name[0]))
        for variant in variants:
            store.put(variant.name, variant.data, variant.content_type)
        shape = _SHAPES[index % len(_SHAPES)]
        pictures.append((f"Demo picture for {name}: the letter {name[0]} on a {shape}", variants))
    return pictures
