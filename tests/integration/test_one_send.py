"""serve's HTTP protocol sends each answer's head and body in one write (`cli/runtime.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
from typing import Any

import pytest
import uvicorn

from leadhook.cli.runtime import _JOIN_MAX, OneSendHttpTools, _OneSend


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name)


async def _turn() -> None:
    await asyncio.sleep(0)


def test_the_writes_of_one_turn_leave_in_one_write() -> None:
    async def main() -> None:
        raw = _Transport()
        t = _OneSend(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        assert raw.writes == [] and t.get_write_buffer_size() == 7 + 40
        await _turn()
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        t.write(b"next")
        await _turn()
        assert raw.writes[1:] == [b"next"]

    asyncio.run(main())


def test_large_writes_are_not_copied_together() -> None:
    async def main() -> None:
        raw = _Transport()
        t = _OneSend(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        big = b"x" * (_JOIN_MAX + 1)
        t.write(b"head")
        t.write(big)
        assert raw.writes == [b"head", big]  # in order, the held head first
        t.write(big)
        assert raw.writes[2:] == [big]
        await _turn()
        assert len(raw.writes) == 3

    asyncio.run(main())


def test_close_and_eof_send_what_is_held_first_and_abort_drops_it() -> None:
    async def main() -> None:
        raw = _Transport()
        t = _OneSend(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"a")
        t.write_eof()
        t.writelines([b"b", b"c"])
        t.close()
        assert (raw.writes, raw.events) == ([b"a", b"bc"], ["eof", "close"])
        t.write(b"lost")
        t.abort()
        await _turn()
        assert raw.writes == [b"a", b"bc"] and raw.events[-1] == "abort"
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest passes through

    asyncio.run(main())


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * (3 * _JOIN_MAX) if scope["path"] == "/big" else b'{"ok":true}'
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _serve_on_uvloop(app: Any, check: Any, *, with_server: bool = False) -> None:
    """Run `check(port, errors)` against `app` served by OneSendHttpTools on uvloop (as serve
    runs it); `errors`: what reached the loop's exception handler. `with_server`: the check
    gets the uvicorn server too (to stop it), as `check(port, errors, server)`."""
    import uvloop

    async def main() -> None:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, c: errors.append(c))
        sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(app, http=OneSendHttpTools, log_config=None, lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            port = sock.getsockname()[1]
            await (check(port, errors, server) if with_server else check(port, errors))
        finally:
            server.should_exit = True
            await task

    uvloop.run(main())


def test_answers_over_a_real_socket_arrive_whole() -> None:
    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in ("/small", "/big", "/small"):  # keep-alive: one connection
            writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            assert body == (b"x" * (3 * _JOIN_MAX) if path == "/big" else b'{"ok":true}')
        writer.write(b"HEAD /small HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"200 OK" in await reader.readuntil(b"\r\n\r\n")
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)  # closed after the answer
        assert b"transfer-encoding: chunked" in rest
        assert rest.endswith(b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n")
        writer.close()
        assert errors == []

    _serve_on_uvloop(_app, check)


def test_an_answer_held_when_the_peer_resets_is_dropped_quietly() -> None:
    # The client resets the connection while its answer is being made (a client timeout):
    # the reset is read in the same turn the answer's handler is woken, so the handler writes
    # (held) before connection_lost runs, and the flush came after the transport's handle
    # was closed: uvloop raised "the handler is closed" into the loop's exception handler.
    # Written straight to the transport, as before, the write was dropped quietly.
    go: asyncio.Future[None] | None = None
    answered = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal go
        if scope["type"] != "http":
            return
        go = asyncio.get_running_loop().create_future()
        await go
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        answered.set()

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        while go is None:
            await asyncio.sleep(0.01)
        # A reset, then the handler woken, in one turn: the reset is read before it runs.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        go.set_result(None)
        await asyncio.wait_for(answered.wait(), 5)
        for _ in range(5):
            await asyncio.sleep(0)
        assert errors == []

    _serve_on_uvloop(app, check)


def test_an_answer_written_before_the_peer_half_closes_still_arrives() -> None:
    # A client that shuts its side down after its request (`nc -N`, some HTTP/1.0 clients):
    # uvicorn's eof_received lets the transport close itself. An answer written before the
    # end of file was read went out as it was written; held, the flush found the transport
    # closed by then and the answer was dropped without a word.
    client: socket.socket | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})
        assert client is not None
        client.shutdown(socket.SHUT_WR)  # the end of file is read before the turn ends

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        nonlocal client
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        client.setblocking(False)
        got = b""
        loop = asyncio.get_running_loop()
        while chunk := await asyncio.wait_for(loop.sock_recv(client, 4096), 5):
            got += chunk
        client.close()
        assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n{}")
        assert errors == []

    _serve_on_uvloop(app, check)


def test_a_request_that_is_not_http_is_refused_as_problem_json() -> None:
    # httptools refuses these before the app sees them; uvicorn's own answer was text/plain.
    bad = (
        b"GET / HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n",  # a control character
        b"GET / HTTP/1.1\r\nhost: x\r\nbad name: y\r\n\r\n",  # a space in a header's name
        b"GARBAGE\r\n\r\n",  # no request line at all
    )

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        for request in bad:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(), 5)  # the server closes
            head, _, body = answer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert lines[0] == b"HTTP/1.1 400 Bad Request", answer
            assert b"content-type: application/problem+json" in lines
            assert b"connection: close" in lines
            assert f"content-length: {len(body)}".encode() in lines
            problem = json.loads(body)
            assert problem["type"] == "https://leadhook.dev/problems/bad-request"
            assert (problem["title"], problem["status"]) == ("Bad request", 400)
            assert "could not be read as HTTP/1.1" in problem["detail"]
            writer.close()
        # The server still answers a good request afterwards.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /small HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b'{"ok":true}')
        writer.close()
        assert errors == []

    _serve_on_uvloop(_app, check)


def test_pipelined_answers_after_the_peer_resets_are_dropped_quietly() -> None:
    # Uvicorn marks only the request it read last as disconnected: those pipelined before it
    # still answered, and their writes on the closed transport raised "the handler is closed"
    # into the app (an ERROR with a traceback) and the loop's exception handler.
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.05)  # the client is gone by the time each answers
        body = b"x" * (3 * _JOIN_MAX)
        try:
            headers = [(b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except BaseException as exc:
            raised.append(exc)
            raise

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n" * 3)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await asyncio.sleep(0.08)  # the first answer is on its way
            client.close()  # a reset
        await asyncio.sleep(0.4)
        assert raised == [] and errors == []

    _serve_on_uvloop(app, check)


def test_a_request_head_over_the_limit_is_refused_as_it_arrives() -> None:
    # httptools gathers a header whole, with no limit of its own: a head of many megabytes
    # was held in memory before the app could refuse it.
    from leadhook.cli.runtime import MAX_REQUEST_HEAD

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        client = socket.create_connection(("127.0.0.1", port))
        client.setblocking(False)
        answer = b""
        try:
            await loop.sock_sendall(client, b"GET /small HTTP/1.1\r\nhost: x\r\nx-big: ")
            for _ in range(8 * MAX_REQUEST_HEAD // 16384):  # refused long before the end
                await loop.sock_sendall(client, b"b" * 16384)
                await asyncio.sleep(0.001)
            while chunk := await asyncio.wait_for(loop.sock_recv(client, 65536), 5):
                answer += chunk
        except ConnectionError:  # the server closed with the rest unread: a reset
            with contextlib.suppress(OSError):
                answer += client.recv(65536)
        client.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:100]
        assert b"application/problem+json" in answer
        # A head just under the limit reaches the app, and so does a pipelined request
        # after a large body (its bytes are not counted as the next request's head).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        big = b"y" * (MAX_REQUEST_HEAD - 200)
        writer.write(b"GET /small HTTP/1.1\r\nhost: x\r\nx-big: " + big + b"\r\n\r\n")
        writer.write(b"POST /small HTTP/1.1\r\nhost: x\r\ncontent-length: 300000\r\n\r\n")
        writer.write(b"z" * 300000 + b"GET /small HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        answers = await asyncio.wait_for(reader.read(), 5)
        assert answers.count(b"HTTP/1.1 200 OK") == 3, answers[:300]
        writer.close()
        assert errors == []

    _serve_on_uvloop(_app, check)


def test_a_request_whose_client_half_closes_is_still_answered() -> None:
    # A client may end its side after the request (`nc -N`, `curl --data @- <file` on some
    # builds, HTTP/1.0 tools): uvicorn let the transport close itself at that end of file,
    # so a request still being worked on was carried out and its answer dropped. The client
    # could not tell a lead created from one refused. Each request read before the end of
    # file is answered, in order, and the connection is closed after the last answer.
    calls: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        await asyncio.sleep(0.05)  # the end of file arrives while the request is worked on
        calls.append(scope["path"])
        body = message.get("body", b"") or scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        post = b'POST /one HTTP/1.1\r\nhost: x\r\ncontent-length: 7\r\n\r\n{"a":1}'
        two = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n"
        for requests, expected in ((post, [b'{"a":1}']), (two, [b"/a", b"/b"])):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(requests)
            client.shutdown(socket.SHUT_WR)
            client.setblocking(False)
            got = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(client, 4096), 5):
                got += chunk  # ends when the server closes
            client.close()
            answers = got.split(b"HTTP/1.1 ")[1:]
            assert [a.startswith(b"201 Created") for a in answers] == [True] * len(expected), got
            assert [a.rpartition(b"\r\n\r\n")[2] for a in answers] == expected
        assert calls == ["/one", "/a", "/b"] and errors == []

    _serve_on_uvloop(app, check)


def test_a_client_that_half_closes_inside_a_body_is_not_waited_for() -> None:
    # The end of file inside a request's body: that request can never be complete, so the
    # connection closes as before (the app reads a disconnect) and nothing hangs.
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (message := await receive())["type"] == "http.request" and message["more_body"]:
            pass
        seen.append(message["type"])

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"a":')
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await asyncio.sleep(0.05)
        assert seen == ["http.disconnect"] and errors == []

    _serve_on_uvloop(app, check)


def test_a_refusal_pipelined_behind_a_request_waits_for_that_answer() -> None:
    # A request that cannot be read, pipelined behind one the app is still working on: its
    # 400 went out at once and the connection closed, so the earlier request was carried out
    # (a lead created, say) and its answer never sent. Answers keep the requests' order.
    done: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await asyncio.sleep(0.05)
        done.append(scope["path"])
        body = scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        two = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n"
        for half_close in (False, True):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(two + b"GARBAGE\r\n\r\nGET /c HTTP/1.1\r\nhost: x\r\n\r\n")
            if half_close:
                writer.write_eof()
            got = await asyncio.wait_for(reader.read(), 5)  # closed after the refusal
            writer.close()
            answers = re.split(rb"HTTP/1\.1 (?=\d{3} )", got)[1:]
            assert [a[:3] for a in answers] == [b"201", b"201", b"400"], got
            assert answers[0].endswith(b"/a") and answers[1].endswith(b"/b")
            assert b"application/problem+json" in answers[2]
        assert done == ["/a", "/b"] * 2 and errors == []  # /c, after the refusal, is not read

    _serve_on_uvloop(app, check)


def test_a_body_that_breaks_while_read_is_refused_at_once() -> None:
    # The broken request is the one being read: its app waits for the rest of the body, so
    # the refusal cannot wait for its answer. It goes at once and the app reads a disconnect.
    from leadhook.api.metrics import REFUSED

    seen: list[str] = []
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        scopes.append(scope)
        # Bounded: were the refusal to wait for this app's answer, the app would wait for
        # ever and the server's shutdown with it; this way the test fails instead.
        while True:
            message = await asyncio.wait_for(receive(), 3)
            if message["type"] != "http.request" or not message["more_body"]:
                break
        seen.append(message["type"])

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        writer.write(head + b"3\r\nabc\r\n")
        await asyncio.sleep(0.05)  # the app is reading the body
        writer.write(b"zz\r\n")  # not a chunk size
        got = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert got.startswith(b"HTTP/1.1 400 Bad Request"), got
        await asyncio.sleep(0.05)
        assert seen == ["http.disconnect"] and errors == []
        # Counted in /metrics as the 400 its client got, not as a client gone (499).
        assert [s.get(REFUSED) for s in scopes] == [400]

    _serve_on_uvloop(app, check)


def test_a_request_cut_short_behind_another_is_dropped_and_nothing_hangs() -> None:
    # A whole request, then one whose body stops short, then the end of file. The first is
    # answered; the second can never be whole. Kept open for the first answer, the server
    # later started the second, whose app waited for ever for its body (a connection and a
    # task held until shutdown, one per such client).
    started: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.append(scope["path"])
        while True:  # bounded: a hang fails the test instead of holding the server
            message = await asyncio.wait_for(receive(), 3)
            if message["type"] != "http.request" or not message["more_body"]:
                break
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"{}"})

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        whole = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        for cut in (
            b'POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"fi',
            b"POST /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(whole + cut)
            writer.write_eof()
            got = await asyncio.wait_for(reader.read(), 2)  # closed after the first answer
            writer.close()
            assert got.startswith(b"HTTP/1.1 201 Created") and got.count(b"HTTP/1.1") == 1
        assert started == ["/a", "/a"] and errors == []

    _serve_on_uvloop(app, check)


def test_a_broken_chunk_in_a_queued_request_keeps_the_earlier_answer() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.wait_for(receive(), 3)
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"{}"})

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        whole = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        broken = (
            b"POST /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(whole + broken)
        got = await asyncio.wait_for(reader.read(), 3)
        writer.close()
        answers = re.split(rb"HTTP/1\.1 (?=\d{3} )", got)[1:]
        assert [a[:3] for a in answers] == [b"201", b"400"], got
        assert errors == []

    _serve_on_uvloop(app, check)


def _streaming(seen: list[str]) -> Any:
    """An app that starts a stream, as the console's events do, then notes what its next
    `receive` gives (within 3 s: a stream that outlives its reader fails the test)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"retry: 500\n\n", "more_body": True})
        seen.append((await asyncio.wait_for(receive(), 3))["type"])

    return app


def test_a_stream_ends_when_its_reader_closes() -> None:
    # A half-close is an end of input, not of reading, for a request still to be answered;
    # once an answer streams, the reader's close ends it (the console's event stream waited
    # for a disconnect that never came, polling the database for its full 30 s).
    seen: list[str] = []
    app = _streaming(seen)

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"retry: 500")
        writer.close()
        for _ in range(40):
            await asyncio.sleep(0.05)
            if seen:
                break
        assert seen == ["http.disconnect"] and errors == []

    _serve_on_uvloop(app, check)


def test_a_request_whose_client_resets_before_its_answer_is_marked_gone() -> None:
    # Uvicorn drops the answer of a request whose client went away; the status its app went
    # on to send was counted in /metrics as an answer (a 201 no client ever got).
    from leadhook.api.metrics import CLIENT_GONE

    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await asyncio.sleep(0.1)  # the client resets meanwhile
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"{}"})
        scopes.append(scope)

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        for reset in (True, False):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            if reset:
                await asyncio.sleep(0.02)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                await asyncio.sleep(0.2)
            else:
                client.setblocking(False)
                loop = asyncio.get_running_loop()
                got = await asyncio.wait_for(loop.sock_recv(client, 4096), 3)
                assert got.startswith(b"HTTP/1.1 201")
                client.close()
        assert [CLIENT_GONE in s for s in scopes] == [True, False] and errors == []

    _serve_on_uvloop(app, check)


def test_a_stream_with_a_request_behind_it_ends_when_its_reader_closes() -> None:
    # Uvicorn told only the request read last that the client was gone: a stream with a
    # request queued behind it waited for a disconnect that never came.
    seen: list[str] = []
    app = _streaming(seen)

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        for end in ("close", "reset", "half-close"):
            seen.clear()
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(
                b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\nGET /m HTTP/1.1\r\nhost: x\r\n\r\n"
            )
            client.setblocking(False)
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_recv(client, 4096), 3)
            if end == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if end == "half-close":
                client.shutdown(socket.SHUT_WR)
            else:
                client.close()
            for _ in range(40):
                await asyncio.sleep(0.05)
                if seen:
                    break
            assert seen[:1] == ["http.disconnect"], end
            if end == "half-close":
                client.close()
        assert errors == []

    _serve_on_uvloop(app, check)


def _slow_created(seconds: float) -> Any:
    """An app that reads its request, works `seconds`, then answers 201 `{}`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await asyncio.sleep(seconds)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def test_a_graceful_stop_still_answers_a_request_after_one_was_dropped() -> None:
    # A request cut short behind a running one is dropped; uvicorn's shutdown then read the
    # dropped one as the last answered and closed at once: the running request's answer
    # (its work done) was lost.
    app = _slow_created(0.3)

    async def check(port: int, errors: list[dict[str, Any]], server: Any) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        whole = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        cut = b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"
        writer.write(whole + cut)
        writer.write_eof()
        await asyncio.sleep(0.1)
        server.should_exit = True  # a graceful stop while /a runs
        got = await asyncio.wait_for(reader.read(), 3)
        writer.close()
        assert got.startswith(b"HTTP/1.1 201 Created"), got
        assert errors == []

    _serve_on_uvloop(app, check, with_server=True)


def test_an_upgrade_not_made_never_runs_its_body_as_a_request() -> None:
    # The parser ends a request that asks to upgrade at its head, and read what followed as
    # a new request: an `Upgrade: h2c` POST ran without its body, and its body, a whole
    # request of its own sent in a later segment, ran too (a request smuggled past whatever
    # checked the first). Only a WebSocket upgrade went to a handler that refused it.
    paths: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.wait_for(receive(), 3)
        paths.append(scope["path"])
        await asyncio.sleep(0.05)
        body = scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    smuggled = b"POST /smuggled HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"

    def upgrade(path: bytes, token: bytes, extra: bytes = b"") -> bytes:
        return (
            b"POST " + path + b" HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\n" + extra
            + b"upgrade: " + token + b"\r\ncontent-length: %d\r\n\r\n" % len(smuggled)
        )  # fmt: skip

    async def exchange(port: int, first: bytes, later: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first)
        await asyncio.sleep(0.1)
        writer.write(later)
        got = await asyncio.wait_for(reader.read(), 3)
        writer.close()
        return got

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        for token, extra in (
            (b"h2c", b""),
            (b"foo", b""),
            (b"websocket", b"connection: close\r\n"),
        ):
            got = await exchange(port, upgrade(b"/outer", token, extra), smuggled)
            assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"400"], (token, got)
            assert b"application/problem+json" in got
        # Behind a request still running: its answer first, then the refusal.
        before = b"POST /first HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        got = await exchange(port, before + upgrade(b"/outer", b"h2c"), smuggled)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"201", b"400"], got
        # Without a body (as `curl --http2` asks): answered as plain HTTP, then closed, and
        # nothing after it is read.
        h2c = b"GET /plain HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\n"
        h2c += b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        got = await exchange(port, h2c, smuggled)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"201"] and got.endswith(b"/plain")
        assert paths == ["/first", "/plain"] and errors == []

    _serve_on_uvloop(app, check)


def test_a_graceful_stop_still_sends_a_refusal_waiting_its_turn() -> None:
    # The stop closed the connection after the running request's answer, before the
    # refusal waiting behind it was written: the client never learnt why.
    app = _slow_created(0.3)

    async def check(port: int, errors: list[dict[str, Any]], server: Any) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGARBAGE\r\n\r\n")
        await asyncio.sleep(0.1)
        server.should_exit = True  # a graceful stop while /a runs
        got = await asyncio.wait_for(reader.read(), 3)
        writer.close()
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"201", b"400"], got
        assert errors == []

    _serve_on_uvloop(app, check, with_server=True)


def test_a_request_without_one_host_is_refused_in_its_turn() -> None:
    """Catches: an HTTP/1.1 request with no Host, or any with two (which a proxy in front may
    read differently from this server), served as if whole (RFC 9112, 3.2: a MUST)."""

    async def refused(port: int, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 5)  # the server closes
        writer.close()
        return answer

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        for request in (
            b"GET /small HTTP/1.1\r\n\r\n",
            b"GET /small HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            b"GET /small HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
        ):
            answer = await refused(port, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 Bad Request"), answer
            assert "exactly one Host" in json.loads(body)["detail"]
        # HTTP/1.0 needs none; a good request behind a refused one's turn is still answered.
        ok = await refused(port, b"GET /small HTTP/1.0\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b'{"ok":true}')
        both = await refused(
            port, b"GET /small HTTP/1.1\r\nhost: x\r\n\r\nGET /small HTTP/1.1\r\n\r\n"
        )
        first, _, second = both.partition(b'{"ok":true}')
        assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 400"), both
        assert errors == []

    _serve_on_uvloop(_app, check)


def test_a_request_not_sent_whole_in_time_gets_408_and_its_connection_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Catches: a connection that never finished a request's head (or body), or never began
    one, held for ever (uvicorn has no such timeout: ~21,000 of them took /healthz down)."""
    from leadhook.cli import runtime

    monkeypatch.setattr(runtime, "REQUEST_READ_TIMEOUT", 0.5)
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.8 if scope["path"] == "/slow" else 0)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def sent(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for part in parts:
            writer.write(part)
            await asyncio.sleep(pause)
        answer = await asyncio.wait_for(reader.read(), 5)  # the server closes
        writer.close()
        return answer

    def timed_out(answer: bytes) -> bool:
        head, _, body = answer.partition(b"\r\n\r\n")
        return head.startswith(b"HTTP/1.1 408 Request Timeout") and json.loads(body)[
            "type"
        ].endswith("/request-timeout")

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        assert await sent(port) == b""  # never began a request: closed, nothing to answer
        assert timed_out(await sent(port, b"GET /a HTTP/1.1\r\nhost: x\r\n"))  # a head cut
        body_cut = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc"
        assert timed_out(await sent(port, body_cut))
        assert seen[-1] == "http.disconnect"  # its app was told, not left waiting
        # A request sent slowly but whole in time, and one pipelined behind an answer that
        # takes longer than the timeout: both answered.
        slow = b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        assert (await sent(port, slow[:10], slow[10:30], slow[30:], pause=0.1)).endswith(b"{}")
        both = await sent(
            port,
            b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        assert both.count(b"HTTP/1.1 200 OK") == 2, both
        # A request whose body waited behind a long answer (the server reads no further
        # meanwhile) gets its time again once that answer is out.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n"
            b"POST /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 4\r\n\r\nab"
        )
        first = await asyncio.wait_for(reader.readuntil(b"{}"), 5)
        assert first.startswith(b"HTTP/1.1 200 OK")
        await asyncio.sleep(0.3)  # the client's own delay: under the timeout
        writer.write(b"cd")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
        # Blank lines after a request begin none: the connection is closed all the same (a
        # hole that held it for ever: uvicorn's keep-alive timer stopped at the bytes).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"{}"), 5)).startswith(b"HTTP/1.1 200")
        writer.write(b"\r\n")
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed, well before 5 s
        writer.close()
        assert errors == []

    _serve_on_uvloop(app, check)


def test_a_transfer_coding_other_than_chunked_is_501() -> None:
    """Catches: `Transfer-Encoding: gzip, chunked` read as chunked (httptools looks at the last
    coding only), the body reaching the app still compressed (RFC 9112, 6.1: 501)."""

    async def check(port: int, errors: list[dict[str, Any]]) -> None:
        # ("chunked, chunked" is httptools' own 400: it cannot be parsed.)
        for codings in (b"gzip, chunked", b"deflate,chunked", b"identity"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /small HTTP/1.1\r\nhost: x\r\ntransfer-encoding: "
                + codings
                + b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            )
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 501 Not Implemented"), (codings, answer)
            assert json.loads(body)["type"].endswith("/not-implemented")
        for chunked in (b"Chunked", b", chunked"):  # any case; an empty list element
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /small HTTP/1.1\r\nhost: x\r\ntransfer-encoding: " + chunked + b"\r\n"
                b"connection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            )
            assert (await asyncio.wait_for(reader.read(), 5)).endswith(b'{"ok":true}'), chunked
            writer.close()
        assert errors == []

    _serve_on_uvloop(_app, check)
