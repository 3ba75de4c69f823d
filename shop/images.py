"""Product images: an upload checked by its content, re-encoded from its pixels alone.

What is stored is never the file that was sent: its format is read from its bytes (the name and
the browser's content type are ignored), only JPEG, PNG and WebP are taken, its size in pixels
is checked before a single pixel is decoded (a 10 KB file can claim 50 megapixels), and a file
that does not decode to the end is refused (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off). The
pixels, turned upright by their EXIF orientation, are then encoded afresh as WebP at a few
widths; nothing of the original's metadata (EXIF with GPS, XMP, ICC profile, comments) is
copied. Each variant is named by the SHA-256 of its bytes, so a name never changes content
(served as immutable) and the same picture uploaded twice is stored once.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLarge, InvalidImage, InvalidInput, UnsupportedImage

# What is taken, by the format Pillow reads from the bytes. Opening tries these decoders only:
# no other of Pillow's many parsers (EPS, PSD, ICO ...) ever sees an upload.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
# Above this many pixels an image is refused before decoding: 40 MP (a 48 MP phone photo
# is binned to 12 MP) decoded as RGBA is 160 MB of memory in a worker.
MAX_PIXELS = 40_000_000
# The widths made (never wider than the original); the largest is what a product page shows
# on a wide, dense screen.
WIDTHS = (320, 640, 1280)
WEBP_QUALITY = 80
CONTENT_TYPE = "image/webp"
EXTENSIONS = {"image/webp": "webp", "image/jpeg": "jpg", "image/png": "png"}
MAX_ALT_LENGTH = 200

# The start of a JPEG, a PNG and a WebP (RIFF....WEBP): a file that starts so but does not
# open is damaged, not of another kind.
_ACCEPTED_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_DAMAGED = "The file is damaged or incomplete and cannot be read as an image ({})."
# The start of a few files people upload by mistake, to say what was sent instead.
_OTHER_KINDS = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"\x00\x00\x01\x00", "an icon file"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "a program (ELF executable)"),
    (b"MZ", "a program (Windows executable)"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
)


@dataclass(frozen=True)
class Variant:
    """One stored encoding of an image: its size, its content's hash and type."""

    width: int
    height: int
    hash: str
    content_type: str = CONTENT_TYPE
    data: bytes = field(default=b"", repr=False, compare=False)

    @property
    def name(self) -> str:
        """The store's key and the URL's last part: ``<sha256>.<ext>``."""
        return f"{self.hash}.{EXTENSIONS[self.content_type]}"

    def as_json(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "hash": self.hash,
            "type": self.content_type,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Variant:
        return cls(value["width"], value["height"], value["hash"], value["type"])


def process_upload(data: bytes, *, max_bytes: int) -> list[Variant]:
    """The variants of an uploaded file, narrowest first; refused with a 4xx error (and nothing
    made) when it is empty, too large, not JPEG/PNG/WebP, too many pixels, or damaged."""
    if not data:
        raise InvalidImage("The file is empty: choose a JPEG, PNG or WebP image.", field="image")
    if len(data) > max_bytes:
        raise ImageTooLarge(
            f"The image is {_megabytes(len(data))}; the most the shop takes is "
            f"{_megabytes(max_bytes)}.",
            field="image",
        )
    return make_variants(decode(data))


def decode(data: bytes) -> Image.Image:
    """The image's pixels, upright, checked whole; see the module's docstring for the rules."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as probe:
            _check_pixels(probe.size)
            probe.verify()  # the structure (PNG chunk checksums) without decoding
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        _check_pixels(image.size)
        image.load()  # every pixel: a truncated file fails here
        return ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        if data.startswith(_ACCEPTED_MAGIC) or data[8:12] == b"WEBP":
            raise InvalidImage(_DAMAGED.format("it starts like one, then"), field="image") from None
        raise UnsupportedImage(_not_accepted(data), field="image") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(_too_many_pixels(), field="image") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        # Pillow's ways of saying the data stops early or does not add up.
        raise InvalidImage(_DAMAGED.format(exc), field="image") from None


def make_variants(image: Image.Image, widths: Sequence[int] = WIDTHS) -> list[Variant]:
    """Encode ``image`` as WebP at each of ``widths`` below its own width, and at its own width
    (at most the largest of ``widths``): from the pixels only, so no metadata goes along."""
    mode = "RGBA" if _has_alpha(image) else "RGB"
    pixels = image.convert(mode)
    pixels.info = {}  # convert() copies the original's info (EXIF, ICC, XMP ...): not here
    largest = min(pixels.width, max(widths))
    targets = sorted({w for w in widths if w < largest} | {largest})
    variants = []
    for width in targets:
        height = max(1, round(pixels.height * width / pixels.width))
        sized = pixels if width == pixels.width else _resize(pixels, width, height)
        out = io.BytesIO()
        sized.save(out, "WEBP", quality=WEBP_QUALITY, method=4)
        data = out.getvalue()
        variants.append(Variant(width, height, hashlib.sha256(data).hexdigest(), data=data))
    return variants


def check_alt(alt: str | None) -> str:
    """The alternative text a screen reader says instead of the picture: required."""
    text = " ".join((alt or "").split())
    if not text:
        raise InvalidInput(
            "Describe the picture in the alternative text (read out to people who cannot see it).",
            field="alt",
        )
    if len(text) > MAX_ALT_LENGTH:
        raise InvalidInput(
            f"The alternative text is limited to {MAX_ALT_LENGTH} characters.", field="alt"
        )
    return text


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    resized = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    resized.info = {}
    return resized


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImage("The image has no pixels.", field="image")
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(_too_many_pixels(width, height), field="image")


def _too_many_pixels(width: int | None = None, height: int | None = None) -> str:
    size = f" ({width} x {height})" if width and height else ""
    return (
        f"The image has too many pixels{size}: at most {MAX_PIXELS // 1_000_000} megapixels. "
        "Make it smaller and upload it again."
    )


def _not_accepted(data: bytes) -> str:
    head = data[:512].lstrip()
    kind = next((name for magic, name in _OTHER_KINDS if data.startswith(magic)), None)
    if kind is None and (head.startswith(b"<?xml") or b"<svg" in head.lower()):
        kind = "an SVG drawing"
    what = f"This file is {kind}" if kind else "This file is not an image the shop can read"
    return (
        f"{what}: only JPEG, PNG and WebP images are taken (the content is checked, not the name)."
    )


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
