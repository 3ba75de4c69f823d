"""Static files are linked by their content's hash and, asked for by it, kept for a year by any
cache (shop/web/static_assets.py); without the hash they are revalidated as before."""

from __future__ import annotations

import hashlib
import re

from shop.web.static_assets import StaticFingerprints
from tests.support import ROOT

CSS = ROOT / "static" / "shop.css"
CSS_HASH = hashlib.sha256(CSS.read_bytes()).hexdigest()[:16]


def test_pages_link_the_stylesheet_by_its_content(app):
    page = app.test_client().get("/").get_data(as_text=True)
    assert re.search(rf'href="/static/shop\.css\?v={CSS_HASH}"', page), "not fingerprinted"


def test_the_fingerprinted_file_is_immutable_for_a_year(app):
    answer = app.test_client().get(f"/static/shop.css?v={CSS_HASH}")
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Set-Cookie" not in answer.headers
    assert "Cookie" not in answer.headers.get("Vary", "")


def test_without_its_current_hash_the_file_is_revalidated(app):
    client = app.test_client()
    for path in ("/static/shop.css", "/static/shop.css?v=0123456789abcdef"):
        answer = client.get(path)
        assert answer.status_code == 200
        assert "immutable" not in answer.headers.get("Cache-Control", ""), path
        assert "public" not in answer.headers.get("Cache-Control", ""), path


def test_a_changed_file_gets_a_new_fingerprint(tmp_path):
    (tmp_path / "site.js").write_text("one")
    fingerprints = StaticFingerprints(tmp_path)
    first = fingerprints.of("site.js")
    (tmp_path / "site.js").write_text("two, longer")
    assert fingerprints.of("site.js") not in (None, first)
    assert fingerprints.of("missing.js") is None
    assert fingerprints.of("../etc/passwd") is None
