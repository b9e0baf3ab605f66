"""The Content-Type a deployed file is served with: one table for every target.

The platform's mimetypes table varies (it reads /etc/mime.types), so the web's core types
are pinned here and a deployment serves the same headers wherever the deployer runs.
"""

from __future__ import annotations

import mimetypes
import posixpath

_MIME = mimetypes.MimeTypes()
_CONTENT_TYPES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".js": "text/javascript",  # RFC 9239
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
}


def content_type_for(path: str) -> str:
    """The Content-Type served for a file, from its extension; text is UTF-8."""
    extension = posixpath.splitext(path)[1].lower()
    content_type = (
        _CONTENT_TYPES.get(extension) or _MIME.guess_type(path)[0] or "application/octet-stream"
    )
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    return content_type
