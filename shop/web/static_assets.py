"""Static files under URLs that change with their content, so any cache may keep them for good.

``url_for('static', filename=...)`` gains ``?v=<hash of the file>``; a request carrying the
file's current hash is answered ``Cache-Control: public, max-age=31536000, immutable`` (as
product images are), so browsers, the stack's Varnish and CloudFront keep it for a year, and a
changed file is a new URL. Without the hash, or with an old one, Flask's answer stands
(``no-cache`` with an ETag: revalidated every time).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.security import safe_join

from ..image_storage import CACHE_CONTROL as IMMUTABLE


class StaticFingerprints:
    """The short content hash of each file in ``folder``, read again when the file changes
    (its size or modification time), so a development server's edits get a new URL."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = str(folder)
        self._known: dict[str, tuple[tuple[int, int], str]] = {}

    def of(self, filename: str) -> str | None:
        """The file's fingerprint, or None when there is no such file."""
        path = safe_join(self.folder, filename)
        if path is None:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        known = self._known.get(filename)
        if known is not None and known[0] == stamp:
            return known[1]
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        self._known[filename] = (stamp, digest)
        return digest


def register_static_assets(app: Flask) -> None:
    """Fingerprint the static URLs the templates make, and mark fingerprinted answers
    immutable (registered after the middleware, so this runs before its finishing touches)."""
    if app.static_folder is None:
        return
    fingerprints = StaticFingerprints(app.static_folder)

    @app.url_defaults
    def add_fingerprint(endpoint: str, values: dict[str, Any]) -> None:
        if endpoint == "static" and "filename" in values and "v" not in values:
            fingerprint = fingerprints.of(values["filename"])
            if fingerprint is not None:
                values["v"] = fingerprint

    @app.after_request
    def immutable_when_fingerprinted(response: Response) -> Response:
        if request.endpoint != "static" or response.status_code not in (200, 304):
            return response
        asked = request.args.get("v")
        filename = (request.view_args or {}).get("filename", "")
        if asked and asked == fingerprints.of(filename):
            response.headers["Cache-Control"] = IMMUTABLE
        return response
