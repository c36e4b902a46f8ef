"""HeaderLimit on its own, without a server: 431 for heavy headers, 414 for long URLs, and
everything else (and non-HTTP scopes) passed to the app untouched."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from leadhook.api.limits import HeaderLimit


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _client() -> TestClient:
    inner = Starlette(routes=[Route("/x", _ok)])
    return TestClient(HeaderLimit(inner, max_header_bytes=2000, max_url_bytes=500))


def test_a_small_request_passes() -> None:
    with _client() as client:
        answer = client.get("/x", params={"q": "a" * 100}, headers={"X-Pad": "p" * 500})
    assert (answer.status_code, answer.text) == (200, "ok")


def test_heavy_headers_get_431_problem() -> None:
    with _client() as client:
        answer = client.get("/x", headers={"X-Pad": "p" * 3000})
    assert answer.status_code == 431
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == 431
    assert body["type"].endswith("header-fields-too-large")
    assert "2000 bytes" in body["detail"]


def test_a_long_url_gets_414_problem() -> None:
    with _client() as client:
        answer = client.get("/x", params={"q": "c" * 600})
    assert answer.status_code == 414
    body = answer.json()
    assert body["status"] == 414
    assert body["type"].endswith("uri-too-long")
    assert "500 bytes" in body["detail"]


def test_headers_are_checked_before_the_url() -> None:
    with _client() as client:
        answer = client.get("/x", params={"q": "c" * 600}, headers={"X-Pad": "p" * 3000})
    assert answer.status_code == 431
