"""Receive leadhook's webhooks with nothing but the standard library's WSGI server.

The same three lines work in Flask or Django: read the raw body, call `verify_wsgi_environ`,
answer `response_status(exc)` when it raises.

    LEADHOOK_SECRET=whsec_... .venv/bin/python examples/receiver_wsgi.py [PORT]   # 8787 by default
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from leadhook.receiver import (
    Deduplicator,
    InvalidPayload,
    SignatureError,
    UnknownEventReceived,
    WebhookTestReceived,
    response_status,
    verify_wsgi_environ,
)

SECRET = os.environ.get("LEADHOOK_SECRET", "")
seen = Deduplicator()
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
REASONS = {204: "No Content", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed"}


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answer 204 for a verified event, 401 for a bad signature, 400 for a bad body."""
    if environ["REQUEST_METHOD"] != "POST":
        start_response("405 Method Not Allowed", [("content-type", "text/plain")])
        return [b"POST leadhook deliveries here\n"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    try:
        event = verify_wsgi_environ(environ, body, SECRET)
    except (SignatureError, InvalidPayload, WebhookTestReceived, UnknownEventReceived) as exc:
        status = response_status(exc)
        start_response(f"{status} {REASONS[status]}", [("content-type", "text/plain")])
        return [str(exc).encode()] if status != 204 else []
    if not seen.is_duplicate(event):
        print(event.event_type, event.extra_data.entity_id, event.entity_version)
    start_response("204 No Content", [])
    return []


if __name__ == "__main__":
    if not SECRET:
        raise SystemExit("set LEADHOOK_SECRET to the subscription's whsec_ secret")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8787
    with make_server("127.0.0.1", port, app) as server:
        print(f"receiving leadhook deliveries on http://127.0.0.1:{port}/")
        server.serve_forever()
