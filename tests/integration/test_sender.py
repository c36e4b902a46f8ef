"""The HTTP sender against real servers on 127.0.0.1: headers, body, pool, limits, TLS, SSRF."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from leadhook.adapters.http.sender import BODY_LIMIT, GuardedResolver, HttpSender
from leadhook.domain.attempts import Delivered, Failed, Gone, Retry
from leadhook.domain.signing import generate_secret, webhook_headers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECRET = generate_secret(b"\x11" * 32)


@dataclass
class Server:
    port: int
    seen: list[tuple[dict[str, str], bytes, object]] = field(default_factory=list)
    handler: Handler | None = None

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(0)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        state.seen.append(({k.lower(): v for k, v in request.headers.items()}, body, peer))
        if state.handler is not None:
            return await state.handler(request)
        return web.Response(text="thanks")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state
    await runner.cleanup()


class FakeResolver:
    """Resolve every name to `addresses` (and count the lookups)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.lookups = 0

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        return list(self.addresses)


async def test_posts_the_body_and_headers_as_given_and_reuses_connections(server: Server) -> None:
    body = '{"event_type":"object_create","name":"张三"}'.encode()
    headers = webhook_headers([SECRET], "01JTEST", 1_700_000_000, body, "leadhook/9.9")
    async with HttpSender(timeout=5, allow_private=True) as sender:
        results = [await sender.send(server.url(), body, headers) for _ in range(3)]
    assert [r.status_code for r in results] == [200, 200, 200]
    assert all(isinstance(r, Delivered) for r in results)
    assert all(r.body == "thanks" and r.error is None and r.latency_ms > 0 for r in results)
    for got, raw, _ in server.seen:
        assert raw == body
        assert {name: got[name] for name in headers} == headers
        assert got["content-type"] == "application/json" and got["user-agent"] == "leadhook/9.9"
    assert len({peer for _, _, peer in server.seen}) == 1  # one pooled keep-alive connection


async def test_a_cookie_an_endpoint_sets_is_never_sent_back(server: Server) -> None:
    async def sets_cookie(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.set_cookie("session", "tenant-a-secret", path="/")
        return response

    server.handler = sets_cookie
    # A name, not an address: a cookie jar keeps no cookie an IP address set.
    resolver = FakeResolver("127.0.0.1")
    async with HttpSender(timeout=5, allow_private=True, resolver=resolver) as sender:
        for path in ("/a", "/b", "/a"):  # /b: another subscription on the same host
            result = await sender.send(server.url(path, host="hooks.example"), b"{}", {})
            assert result.status_code == 200
    assert [("cookie" in got) for got, _, _ in server.seen] == [False, False, False]


async def test_keeps_only_the_first_kilobyte_of_the_answer(server: Server) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="é" * 5000, headers={"Retry-After": "7"})

    server.handler = big
    async with HttpSender(timeout=5, allow_private=True) as sender:
        result = await sender.send(server.url(), b"{}", {"content-type": "application/json"})
        again = await sender.send(server.url(), b"{}", {})
    assert isinstance(result, Retry) and result.status_code == 503 and result.after == 7.0
    assert len(result.body.encode("utf-8", errors="surrogateescape")) <= BODY_LIMIT + 3
    assert result.body.startswith("é" * 500)
    assert again.status_code == 503  # the connection closed early did not break the next one


async def test_redirects_are_not_followed(server: Server) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data")

    server.handler = moved
    async with HttpSender(timeout=5, allow_private=True) as sender:
        result = await sender.send(server.url(), b"{}", {})
    assert result.status_code == 302 and len(server.seen) == 1
    assert isinstance(result, Failed) and result.why == "HTTP 302"


async def test_410_is_gone_and_keeps_what_the_attempt_records(server: Server) -> None:
    async def gone(request: web.Request) -> web.StreamResponse:
        return web.Response(status=410, text="bye")

    server.handler = gone
    async with HttpSender(timeout=5, allow_private=True) as sender:
        result = await sender.send(server.url(), b"{}", {})
    assert isinstance(result, Gone) and result.why == "HTTP 410 Gone"
    assert (result.status_code, result.body, result.error) == (410, "bye", None)


async def test_a_slow_endpoint_times_out_with_a_clear_error(server: Server) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1)
        return web.Response(text="late")

    server.handler = slow
    async with HttpSender(timeout=0.3, allow_private=True) as sender:
        result = await sender.send(server.url(), b"{}", {})
    assert result.status_code is None and result.error == "timeout after 0.3s"
    assert isinstance(result, Failed) and result.why == "no response: timeout after 0.3s"
    assert 250 < result.latency_ms < 1500


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("way", ["dawdles", "is cut short"])
async def test_an_answer_whose_body_fails_counts_by_its_status(
    server: Server, status: int, way: str
) -> None:
    # The status line and headers came at once; then the body dawdles past the timeout, or
    # the connection closes halfway. The endpoint answered: a 2xx is delivered (not retried
    # and sent again), any other status is judged as that status.
    async def answer(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Length": "100"})
        await resp.prepare(request)
        await resp.write(b"hello")
        if way == "dawdles":
            await asyncio.sleep(1)
        else:
            assert request.transport is not None
            request.transport.close()
        return resp

    server.handler = answer
    async with HttpSender(timeout=0.3, allow_private=True) as sender:
        result = await sender.send(server.url(), b"{}", {})
    assert result.status_code == status
    assert isinstance(result, Delivered if status == 200 else Failed)
    assert result.body == ""


async def test_a_closed_port_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        async with HttpSender(timeout=2, allow_private=True) as sender:
            result = await sender.send(f"http://127.0.0.1:{port}/", b"{}", {})
    assert result.status_code is None and result.error is not None
    assert result.error.startswith(f"cannot connect to 127.0.0.1:{port}: ConnectionRefusedError")


async def test_literal_private_targets_are_refused_without_a_connection(server: Server) -> None:
    async with HttpSender(timeout=2) as sender:
        for url in (server.url(), server.url(host="[::1]"), "http://169.254.169.254/x"):
            result = await sender.send(url, b"{}", {})
            assert result.status_code is None
            assert result.error and result.error.startswith("refused target")
            assert "LEADHOOK_ALLOW_PRIVATE_TARGETS" in result.error
    assert server.seen == []


async def test_names_resolving_to_private_addresses_are_refused_at_send_time(
    server: Server,
) -> None:
    resolver = FakeResolver("127.0.0.1")
    async with HttpSender(timeout=2, resolver=resolver) as sender:
        result = await sender.send(server.url(host="hooks.example.test"), b"{}", {})
    assert resolver.lookups == 1 and server.seen == []
    assert result.status_code is None and result.error is not None
    assert result.error.startswith(
        "refused target hooks.example.test: resolves to a loopback address; set"
    )
    assert "127.0.0.1" not in result.error  # the kind, never the internal address
    # With private targets allowed, the same name is resolved and sent to.
    allowed = FakeResolver("127.0.0.1")
    async with HttpSender(timeout=2, allow_private=True, resolver=allowed) as sender:
        ok = await sender.send(server.url(host="hooks.example.test"), b"{}", {})
    assert ok.status_code == 200 and len(server.seen) == 1


async def test_the_guard_refuses_a_name_if_any_address_is_private() -> None:
    mixed = GuardedResolver(FakeResolver("93.184.216.34", "10.0.0.1"))
    with pytest.raises(OSError, match=r"rebind\.example\.test: resolves to a private address"):
        await mixed.resolve("rebind.example.test", 443)
    public = await GuardedResolver(FakeResolver("93.184.216.34")).resolve("ok.example.test", 443)
    assert public == ["93.184.216.34"]
