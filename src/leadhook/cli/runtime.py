"""Run the API and the delivery loop in one asyncio loop, and stop them gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from leadhook.api.metrics import CLIENT_GONE, REFUSED
from leadhook.api.problems import problem_text
from leadhook.domain.errors import UnavailableError
from leadhook.services.dispatcher import GATHER

if TYPE_CHECKING:
    from leadhook.bootstrap import Container

T = TypeVar("T")
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
log = logging.getLogger("leadhook.serve")
Deliver = Literal["inline", "process"] | None
MAX_REQUEST_HEAD = 64 * 1024
# Seconds a client has to send a request whole, from its first byte; and a new connection to
# begin its first request. Uvicorn has no such limit: a client that opened connections and
# never finished a head (or a body) held each for ever, until the process ran out of file
# descriptors (docs/operations.md, "Exposed to untrusted clients"). nginx's header and body
# timeouts are 60 s too.
REQUEST_READ_TIMEOUT = 60.0
# Seconds a stopping server gives the requests in flight before it cancels them.
GRACE_SECONDS = 5


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        return asyncio.run(_dropping_queued_work(main))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_dropping_queued_work(main))


async def _dropping_queued_work(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` with a default executor whose queued work is dropped once `main` is done.

    The loop's default executor runs its blocking calls: `getaddrinfo` for every webhook
    host, the console's reads. Closing the loop waits for all of it, queued work included:
    a worker stopped with a thousand name lookups queued behind unanswered ones did not exit
    for over 45 s after "dispatcher stopped" (a review). Nothing queued is needed any more
    once `main` returned; what is running is waited for, as before.
    """
    executor = ThreadPoolExecutor(thread_name_prefix="leadhook-blocking")
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        return await main
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def bind(host: str, port: int) -> socket.socket:
    """Open the listening socket up front: a busy port fails here, and port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        host.encode("idna")
    except UnicodeError:
        # `bind` would raise TypeError ("encoding of hostname failed"): a bad name, said so.
        raise OSError(f"{host!r} is not a host name or address") from None
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.setblocking(False)
    return sock


def base_url(sock: socket.socket) -> str:
    """Return `http://host:port` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _OneSend:
    """A connection's transport whose writes of one turn of the loop go out in one send.

    Uvicorn writes an answer's head and its body apart: two `send` system calls and two TCP
    segments an answer, each waking the client (on loopback the sender's call carries the
    whole delivery to the receiving socket). Held until the end of the turn, the head and
    the body leave together. Writes of more than `_JOIN_MAX` bytes together are not joined
    (the copy would cost more than the call): what is held goes first, then they do.
    """

    __slots__ = ("_held", "_loop", "_lost", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._size = 0
        self._lost = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._lost:
            return
        if self._held is None:
            if len(data) > _JOIN_MAX:
                self._out(data)
                return
            self._held = [bytes(data)]
            self._size = len(data)
            self._loop.call_soon(self.flush)
        elif self._size + len(data) > _JOIN_MAX:
            self.flush()
            self._out(data)
        else:
            self._held.append(bytes(data))
            self._size += len(data)

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what is held now."""
        held, self._held = self._held, None
        if held:
            self._out(held[0] if len(held) == 1 else b"".join(held))

    def _out(self, data: bytes | bytearray | memoryview) -> None:
        # A transport uvloop closed on a reset it read (connection_lost not run yet) raises
        # "the handler is closed" on a write: what would have gone to it is dropped.
        if self._transport.is_closing():
            self._lost = True
            return
        self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (self._size if self._held else 0)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self.drop()
        self._transport.abort()

    def drop(self) -> None:
        """Forget what is held, and what is written from now on: the connection is gone.

        Uvicorn marks only the request it read last as disconnected; requests pipelined
        before it still answer, and their writes (or a flush still scheduled) on the closed
        transport raised "the handler is closed" into the app and the loop's exception
        handler: an ERROR and a traceback in the log for a client that went away."""
        self._held = None
        self._lost = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_JOIN_MAX = 64 * 1024
_UNPARSABLE = (
    "the request could not be read as HTTP/1.1 (its request line, a header, or its body's "
    "framing); the connection is closed"
)
_HOST_RULE = (
    "an HTTP/1.1 request needs exactly one Host header (RFC 9112, 3.2), and no request may "
    "have two; the connection is closed"
)
_CODINGS = (
    "the only transfer coding this server reads is a single 'chunked' (RFC 9112, 6.1); send "
    "the body without another coding; the connection is closed"
)
# Refusals the protocol makes itself: status line, title, problem type.
_REFUSALS = {
    400: (b"400 Bad Request", "Bad request", "bad-request"),
    408: (b"408 Request Timeout", "Request timeout", "request-timeout"),
    501: (b"501 Not Implemented", "Not implemented", "not-implemented"),
}
_READ_TIMED_OUT = (
    "the request was not sent whole within {seconds:g} seconds of its first byte; the "
    "connection is closed"
)
_UPGRADE_WITH_BODY = (
    "an Upgrade request with a body is not served: this server does not change protocols "
    "(send the request without Upgrade); the connection is closed"
)
_UPGRADE_BEHIND = (
    "a WebSocket upgrade was sent behind requests still being answered; no route here is a "
    "WebSocket, and the connection is closed after their answers"
)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request head announces a body: chunks, or a length other than 0."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _refusal_bytes(protocol: HttpToolsProtocol, status: int, detail: str) -> bytes:
    """The whole answer of a refusal the protocol makes itself (`_REFUSALS`): problem+json,
    then closed."""
    status_line, title, kind = _REFUSALS[status]
    body = problem_text(status, title, detail, kind).encode()
    head = [b"HTTP/1.1 ", status_line, b"\r\n"]
    for name, value in protocol.server_state.default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [
        b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class OneSendHttpTools(HttpToolsProtocol):
    """Uvicorn's httptools protocol, each answer's head and body in one send (`_OneSend`),
    a request head over `MAX_REQUEST_HEAD` refused as it arrives, a request not sent whole
    within `REQUEST_READ_TIMEOUT` refused (408), and the requests RFC 9112 says a server
    must or should refuse (no Host or two: 400; a transfer coding but chunked: 501)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_timer: asyncio.TimerHandle | None = None
        self._one_send = _OneSend(transport, self.loop)
        self._head_open = False  # a request's head has begun and not ended
        self._head_bytes = 0  # bytes read since, counted a read at a time
        self._heads_begun = 0
        self._peer_done = False  # the peer ended its side with whole requests to answer
        self._refusal: bytes | None = None  # a 400 waiting for the answers before it
        self._running: Any = None  # the request whose app was started last
        self._read_no_more = False  # an upgrade not made: what follows it is not HTTP
        super().connection_made(self._one_send)  # type: ignore[arg-type]
        self._arm_read_timer()  # a connection that never begins a request is closed too

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None or self._read_no_more:
            return  # after a request refused, or an upgrade not made, nothing more is HTTP
        # httptools gathers a header whole before handing it over, with no limit of its own:
        # a 64 MB header was held in memory before the app's HeaderLimit could answer 431
        # (uvicorn's own limit, `h11_max_incomplete_event_size`, is h11's only). Reads are
        # counted while a head stays open across them: the read a head began in is not (its
        # first part may be an earlier request's body), so a head is refused once it is over
        # the limit by at most one read (uvloop's are up to 256 KiB).
        begun = self._heads_begun
        super().data_received(data)
        if self._read_timer is None and not self._one_send.is_closing():
            # Bytes that begin no request (blank lines before a request line, which the
            # parser skips) cancelled uvicorn's keep-alive timer: with no clock of this
            # protocol's running either, such a connection was held for ever (a review).
            self._arm_read_timer()
        if not self._head_open or self._one_send.is_closing():
            return
        self._head_bytes = 0 if self._heads_begun != begun else self._head_bytes + len(data)
        if self._head_bytes > MAX_REQUEST_HEAD:
            self.logger.warning("Request head over %d bytes refused.", MAX_REQUEST_HEAD)
            self.send_400_response("request head too large")

    def on_message_begin(self) -> None:
        self._head_open = True
        self._heads_begun += 1
        self._arm_read_timer()
        super().on_message_begin()

    def _arm_read_timer(self) -> None:
        self._stop_read_timer()
        self._read_timer = self.loop.call_later(REQUEST_READ_TIMEOUT, self._read_timed_out)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _body_due(self) -> bool:
        """Whether the last request's head was read and the rest of its body is still due."""
        cycle = self.cycle
        return not self._head_open and cycle is not None and bool(cycle.more_body)

    def _read_timed_out(self) -> None:
        """A request not read whole within `REQUEST_READ_TIMEOUT` of its first byte: 408, and
        the connection closed; a new connection that sent nothing: closed. While earlier
        requests are still being answered the wait is this server's (it reads no further
        until then), and the clock starts again."""
        self._read_timer = None
        if self.transport.is_closing() or self._refusal is not None:
            return
        cycle = self.cycle
        body_due = self._body_due()
        if body_due and cycle is self._running:
            # Its app waits for the rest of the body: it is told the client is gone, and the
            # client gets the 408 unless an answer of the app's has begun already.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
            cycle.scope[REFUSED] = 408
        elif self._answering():
            self._arm_read_timer()
            return
        elif not body_due and not self._head_open:
            self.transport.close()  # nothing begun: nothing to answer
            return
        detail = _READ_TIMED_OUT.format(seconds=REQUEST_READ_TIMEOUT)
        self._refusal = _refusal_bytes(self, 408, detail)
        self._refuse()

    def on_headers_complete(self) -> None:
        self._head_open = False
        codings = [
            coding.strip().lower()
            for name, value in self.headers
            if name == b"transfer-encoding"
            for coding in value.split(b",")
        ]
        codings = [coding for coding in codings if coding]  # empty list elements (RFC 9110, 5.6.1)
        if codings and codings != [b"chunked"]:
            # RFC 9112, 6.1: a transfer coding the server does not understand is 501. Read as
            # chunked (httptools looks at the last coding only), a body sent `gzip, chunked`
            # reached the app still compressed.
            self._send_refusal(501, _CODINGS)
            return
        hosts = sum(1 for name, _ in self.headers if name == b"host")
        if hosts > 1 or (hosts == 0 and self.parser.get_http_version() != "1.0"):
            # RFC 9112, 3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host
            # and to any with more than one; two of them let a proxy and this server read
            # different ones. Answered in its turn, as any other refusal.
            self.send_400_response("Host", _HOST_RULE)
            return
        if self.parser.should_upgrade() and not self._should_upgrade():
            # An upgrade this server does not make (h2c, any token but a WebSocket's). The
            # parser ends such a request at its head and would read what follows as a new
            # request: its body, run as a request of its own. With a body it is refused (in
            # its turn); without one (`curl --http2` asks so) it is answered as plain HTTP and
            # the connection closes after the answer, nothing after it read.
            if _has_body(self.headers):
                self.send_400_response("Upgrade with a body", _UPGRADE_WITH_BODY)
                return
            super().on_headers_complete()
            self.cycle.keep_alive = False
            self._read_no_more = True
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_read_timer()
        if self._refusal is None:
            super().on_message_complete()

    def _unsupported_upgrade_warning(self) -> None:
        pass  # handled above; uvicorn's advice to install a WebSocket library does not apply

    def connection_lost(self, exc: Exception | None) -> None:
        # What is held has nowhere to go: after connection_lost the transport's handle is
        # closed, and a flush still scheduled would make uvloop raise "the handler is closed"
        # into the loop's exception handler (a peer's reset read in the turn its answer was
        # written). Written straight to the transport, it was dropped quietly.
        self._one_send.drop()
        self._stop_read_timer()
        # A request whose answer has not begun gets none: counted as its client's close
        # (`CLIENT_GONE`), not as the status its app goes on to send into the void.
        running = self._running
        if running is not None and not running.response_started:
            running.scope[CLIENT_GONE] = True
        super().connection_lost(exc)
        # Uvicorn tells only the request it read last that its client is gone; the one
        # running may be another (a stream with a request queued behind it), whose app then
        # waited for a disconnect that never came (the console's stream ran its full 30 s).
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()

    def shutdown(self) -> None:
        # As uvicorn's: close an idle connection now, else after the answers under way. Its
        # test of `self.cycle` saw a request dropped from the queue (`_drop_queued`) as
        # answered and closed at once, losing the answer of the one still running.
        if not self._answering():
            self.transport.close()
            return
        if self._refusal is not None:
            return  # the refusal waiting closes the connection after those answers itself
        last = self.pipeline[0][0] if self.pipeline else self._running
        last.keep_alive = False

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._running = cycle  # the request whose app runs now (uvicorn runs one at a time)
        super()._start_asgi_task(cycle, app)

    def _drop_queued(self, cycle: Any) -> bool:
        """Take `cycle`, a request that can never be whole (its body cut short), out of the
        queue of pipelined requests: it is never started, so nothing waits for its body.
        False if it is not queued (it is the one running)."""
        for item in self.pipeline:
            if item[0] is cycle:
                self.pipeline.remove(item)
                cycle.response_complete = cycle.disconnected = True
                return True
        return False

    def _unfinishable(self) -> bool:
        """Whether the request being read can never be whole: its body is cut short (an end
        of file, a broken chunk) and its app is already running, waiting for the rest. A
        request cut short while queued behind others is dropped from the queue instead."""
        last = self.cycle
        if last is None or not last.more_body or last.response_complete:
            return False
        return not self._drop_queued(last)

    def handle_websocket_upgrade(self) -> None:
        # No route is a WebSocket; uvicorn's handler refuses the upgrade and closes. Behind
        # a request still running it took the connection over at once, and that request's
        # answer (its work done) was never sent: the refusal then waits for it, as any other.
        if self._answering():
            self.send_400_response("WebSocket upgrade behind other requests", _UPGRADE_BEHIND)
            return
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str, detail: str = "") -> None:
        # A request httptools cannot parse (a control character in a header, a space in a
        # header's name, a request line that is not HTTP) never reaches the app: uvicorn
        # answered it in plain text, the one refusal of the API that was not problem+json.
        self._send_refusal(400, detail or _UNPARSABLE)

    def _send_refusal(self, status: int, detail: str) -> None:
        """Refuse the request being read with `status` (400 or 501), in its turn."""
        self._refusal = _refusal_bytes(self, status, detail)
        # Answers go out in the order of their requests (RFC 9112, 9.3.2). Written at once,
        # the refusal of a request pipelined behind one still being worked on came first,
        # and that one's answer (a lead created, say) was never sent: the connection closes
        # with the refusal. It waits for the answers before it (`on_response_complete`),
        # unless the request that broke is the one running (a body cut by a bad chunk): its
        # app waits for the rest of it, which only the close can end.
        if self._unfinishable():
            # Counted as what its client got, not as a client gone (`metrics.REFUSED`).
            broken: Any = self.cycle
            broken.scope[REFUSED] = status
            self._refuse()
        elif not self._answering():
            self._refuse()

    def _answering(self) -> bool:
        """Whether a request read before now is still to be answered: one queued, or the one
        running (which may be other than the last read, if that was dropped)."""
        running = self._running
        return bool(self.pipeline) or (running is not None and not running.response_complete)

    def _refuse(self) -> None:
        assert self._refusal is not None
        if not self.transport.is_closing():
            self.transport.write(self._refusal)
            self.transport.close()

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio's own type
        # What an answer wrote before the peer's end of file goes out first, as it did written
        # straight to the transport (a flush after a close would find it closed and drop it).
        self._one_send.flush()
        super().eof_received()
        # A client may end its side once its request is sent (`nc -N`, some HTTP/1.0 tools).
        # Uvicorn let the transport close itself here, so a request still being worked on was
        # carried out and its answer dropped. Each request read whole is answered, in order,
        # on the half still open, and the connection closes after the last answer
        # (`on_response_complete`). As before, the connection closes at once when the request
        # running can never be whole (an end of file inside its body), or when its answer is
        # already being sent: a stream (the console's events) ends when its reader leaves.
        if self._unfinishable():
            return None
        running = self._running
        if running is not None and running.response_started and not running.response_complete:
            return None
        if self._answering():
            self._peer_done = True
            return True
        return None

    def on_response_complete(self) -> None:
        if self._read_timer is not None and (self._head_open or self._body_due()):
            # The request being read waited while earlier ones were answered (this server
            # reads no further meanwhile): its clock starts again now.
            self._arm_read_timer()
        super().on_response_complete()
        if self.transport.is_closing() or self._answering():
            return
        if self._refusal is not None:
            self._refuse()
        elif self._peer_done:
            self.transport.close()


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the command owns SIGINT and SIGTERM.

    Uvicorn re-raises a captured signal once it has stopped, which would kill the process
    before the delivery loop drains and turn a clean stop into a non-zero exit.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def shutdown_on_signals(shutdown: asyncio.Event, on_force: Callable[[], None]) -> Iterator[None]:
    """Set `shutdown` on the first SIGINT/SIGTERM and call `on_force` on the next one."""
    loop = asyncio.get_running_loop()

    def handle() -> None:
        if shutdown.is_set():
            on_force()
        shutdown.set()

    installed = []
    for sig in SHUTDOWN_SIGNALS:
        try:
            loop.add_signal_handler(sig, handle)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_service(
    container: Container,
    *,
    sock: socket.socket | None,
    deliver: Deliver = "inline",
    concurrency: int | None = None,
    shutdown: asyncio.Event | None = None,
    on_started: Callable[[], None] = lambda: None,
    log_level: str = "info",
    access_log: bool = False,
    handle_signals: bool = True,
    freeze_heap: bool = False,
) -> None:
    """Serve the API on `sock` (if any) and deliver until `shutdown` is set.

    `deliver` says where the delivery loop runs: `inline` on this event loop, `process` in a
    supervised child process (`DeliveryProcess`), None nowhere. Stops in order: uvicorn
    finishes the requests in flight, then the delivery loop drains and releases what it
    claimed. An API or delivery loop that fails stops the other and the failure is raised.
    With `freeze_heap` (the commands, which own their process) the heap built at start-up is
    frozen once everything has started, before the first request or delivery
    (`freeze_startup_heap`).
    """
    shutdown = shutdown or asyncio.Event()
    stop = asyncio.Event()
    server: _Server | None = None
    api: Any = None
    tasks: list[asyncio.Task[None]] = []
    if sock is not None:
        from leadhook.api.app import create_app  # here: a worker and `listen` need no API

        api = create_app(container)
        config = uvicorn.Config(
            api,
            log_config=None,  # the command configures logging (`cli.logs.configure_logging`)
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=GRACE_SECONDS,
            # The parser refuses a request head over this with a bare 400 (`OneSendHttpTools`;
            # this setting for h11, should it be chosen); below it, the app's HeaderLimit
            # answers 431 problem+json for heads over its own (smaller) limit.
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
            http=OneSendHttpTools,
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="api"))
    if deliver == "inline":
        dispatcher = container.make_dispatcher(concurrency=concurrency)
        tasks.append(asyncio.create_task(dispatcher.run(stop), name="dispatcher"))
        automation = container.make_automation()  # the pool rules run beside delivery
        if automation is not None:
            tasks.append(asyncio.create_task(automation.run(stop), name="automation"))
        # SQLite's checkpoints run beside delivery, not in the API's commits (db/checkpoint.py).
        checkpointer = container.make_checkpointer()
        if checkpointer is not None:
            tasks.append(asyncio.create_task(checkpointer.run(stop), name="wal-checkpoint"))
    elif deliver == "process":
        # The child (`leadhook worker`) runs the pool rules' schedule beside its delivery loop.
        child = DeliveryProcess(container, concurrency=concurrency, log_level=log_level)
        tasks.append(asyncio.create_task(child.run(stop), name="delivery-process"))

    def force() -> None:
        if server is not None:
            server.force_exit = True

    signals = shutdown_on_signals(shutdown, force) if handle_signals else contextlib.nullcontext()
    with signals:
        await _until_started(server, tasks)
        if not any(t.done() for t in tasks):
            if freeze_heap:
                freeze_startup_heap()
            on_started()
        waiter = asyncio.create_task(shutdown.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if server is not None:
            server.should_exit = True
            from leadhook.api.app import stopping

            stopping(api)  # the console's live streams end now, not at the grace period's end
            # A write still waiting (for a lock another program holds) when the grace period
            # is nearly over is refused, unwritten, with a 503 its client may retry; else
            # uvicorn cancels its request (a bare 500) and `close` wrote it afterwards.
            refusal = asyncio.get_running_loop().call_later(
                GRACE_SECONDS - 1, _refuse_waiting_writes, container
            )
            await asyncio.wait(tasks[:1])
            refusal.cancel()
        stop.set()
        await asyncio.wait(tasks)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


def _refuse_waiting_writes(container: Container) -> None:
    refused = container.writer.refuse_waiting(
        UnavailableError("leadhook is stopping: this request was not written; send it again")
    )
    if refused:
        log.warning("stopping: %d waiting writes refused, unwritten (503)", refused)


def freeze_startup_heap() -> None:
    """Take what start-up built out of the cyclic garbage collector's sight (`gc.freeze`).

    The app, its routes and models, the libraries' schemas and the database's metadata are
    hundreds of thousands of objects that live as long as the process. Every full collection
    walked all of them again: a batch of 500 leads allocates enough to trigger one about every
    five or six batches, 90 ms each: a sixth of the batch's CPU (`bench/profiles.md`). Frozen,
    they are skipped; objects made later are collected as before, and a frozen object whose
    last reference goes is still freed at once (only a frozen reference cycle would stay).
    Only for a process of its own: an embedding process (tests, the demo) keeps its heap as is.
    """
    gc.collect()
    gc.freeze()


async def _until_started(server: _Server | None, tasks: list[asyncio.Task[None]]) -> None:
    while server is not None and not server.started and not any(t.done() for t in tasks):
        await asyncio.sleep(0.02)


class DeliveryProcess:
    """Run the delivery loop in a child process (`leadhook worker`), and keep it running.

    The API and the delivery loop then each have a core's worth of interpreter: on one GIL,
    every delivery's claim, signature, POST and record slowed the requests. The API wakes the
    child through a pipe when a commit enqueued deliveries (one byte; a full pipe already says
    "wake up"). A child that exits on its own is started again after a short, growing pause;
    nothing is lost meanwhile (its leases expire, the deliveries wait in the outbox). When
    `stop` is set the child gets SIGTERM and drains as `leadhook worker` does.

    The child runs in its own session, so a Ctrl-C in the terminal reaches only serve, which
    then stops the child in order; if serve itself dies, the child reads end-of-file on the
    pipe and stops.
    """

    RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
    STABLE_AFTER = 60.0
    """Seconds a child ran for its exit to count as the first of a new series."""

    @classmethod
    def next_pause(cls, exits_before: int, ran: float) -> tuple[int, float]:
        """Return the exits in a row, this one included, and the pause before the next start.

        A child that ran `STABLE_AFTER` seconds starts the series again: its exit gets the
        shortest pause. Only a child that keeps exiting soon after its start waits longer."""
        exits = 1 if ran > cls.STABLE_AFTER else exits_before + 1
        return exits, cls.RESTART_DELAYS[min(exits, len(cls.RESTART_DELAYS)) - 1]

    def __init__(
        self, container: Container, *, concurrency: int | None, log_level: str = "info"
    ) -> None:
        self._container = container
        self._concurrency = concurrency
        self._log_level = log_level
        self.pid: int | None = None
        self.restarts = 0

    def command(self, wake_fd: int) -> list[str]:
        """The child's command line. The database URL is not on it (`environment`): anyone on
        the machine reads a command line (`ps`), and the URL may hold a password."""
        cmd = [sys.executable, "-m", "leadhook", "worker"]
        cmd += ["--log-level", self._log_level, "--wake-fd", str(wake_fd)]
        if self._concurrency:
            cmd += ["--concurrency", str(self._concurrency)]
        return cmd

    def environment(self) -> dict[str, str]:
        """The child's environment: serve's own, with the database serve was given (by flag
        or by environment) as `LEADHOOK_DATABASE_URL`."""
        return {**os.environ, "LEADHOOK_DATABASE_URL": self._container.settings.database_url}

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a child delivering until `stop` is set; then stop it gracefully."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)

        def wake() -> None:
            with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending
                os.write(write_end, WAITING)

        def stopped() -> None:
            with contextlib.suppress(BlockingIOError, OSError):  # full: the child is stuck
                os.write(write_end, STOPPED)  # and learns it at its heartbeat

        unlisten = self._container.wakeup.listen(wake)
        unlisten_stopped = self._container.wakeup.listen_stopped(stopped)
        exits = 0  # in a row, each soon after its start (`next_pause`)
        try:
            while not stop.is_set():
                proc = await asyncio.create_subprocess_exec(
                    *self.command(read_end),
                    pass_fds=(read_end,),
                    start_new_session=True,
                    env=self.environment(),
                )
                self.pid = proc.pid
                log.info("delivery process started", extra={"pid": proc.pid})
                waiter = asyncio.create_task(stop.wait())
                exited = asyncio.create_task(proc.wait())
                started = asyncio.get_running_loop().time()
                await asyncio.wait([waiter, exited], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if stop.is_set() and not exited.done():
                    await self._terminate(proc, exited)
                    return
                code = exited.result()
                if stop.is_set():
                    return
                ran = asyncio.get_running_loop().time() - started
                exits, delay = self.next_pause(exits, ran)
                log.warning(
                    "delivery process exited; starting another",
                    extra={"pid": proc.pid, "exit_code": code, "restart_in_s": delay},
                )
                self.restarts += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
        finally:
            unlisten()
            unlisten_stopped()
            os.close(write_end)
            os.close(read_end)

    async def _terminate(self, proc: asyncio.subprocess.Process, exited: asyncio.Task[int]) -> None:
        proc.send_signal(signal.SIGTERM)
        settings = self._container.settings
        try:
            # As long as the child's own drain may take: attempts in flight, then recording.
            await asyncio.wait_for(asyncio.shield(exited), settings.delivery_timeout + 40.0)
        except TimeoutError:
            log.error("delivery process did not stop; killing it", extra={"pid": proc.pid})
            proc.kill()
            await exited


# The bytes serve writes to its delivery process's pipe: deliveries are waiting (a commit
# enqueued some, or let some flow again), or a subscription was disabled or deleted.
WAITING = b"!"
STOPPED = b"x"


def watch_wake_fd(
    fd: int,
    wake: Callable[[], None],
    on_eof: Callable[[], None],
    hold: float = GATHER,
    stopped: Callable[[], None] = lambda: None,
) -> None:
    """Call `wake` whenever bytes arrive on `fd` (and `stopped` too when a `STOPPED` byte is
    among them), `on_eof` once its writer is gone.

    After a wake-up the pipe is not watched for `hold` seconds: serve writes a byte for every
    commit that enqueued deliveries, and the dispatcher woken by the first one waits that long
    (`GATHER`) for the next commits to join its claim anyway. Waking the delivery process for
    each of them cost a sequential client's run two context switches and a turn of the loop a
    lead, on the cores the API needs. The bytes written meanwhile stay in the pipe: once it is
    watched again they wake the loop at once (a claim that already took their rows finds
    nothing more), so no commit goes unannounced and none waits longer than `hold` for it."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            if hold > 0:
                loop.remove_reader(fd)
                loop.call_later(hold, loop.add_reader, fd, readable)
            if STOPPED in data:
                stopped()
            wake()
        else:
            loop.remove_reader(fd)
            on_eof()

    loop.add_reader(fd, readable)
