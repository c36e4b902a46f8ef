"""Run the API and the delivery loop in one asyncio loop, and stop them gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn

if TYPE_CHECKING:
    from leadhook.bootstrap import Container

T = TypeVar("T")
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MAX_REQUEST_HEAD = 64 * 1024


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def bind(host: str, port: int) -> socket.socket:
    """Open the listening socket up front: a busy port fails here, and port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.setblocking(False)
    return sock


def base_url(sock: socket.socket) -> str:
    """Return `http://host:port` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
    deliver: bool = True,
    concurrency: int | None = None,
    shutdown: asyncio.Event | None = None,
    on_started: Callable[[], None] = lambda: None,
    log_level: str = "info",
    access_log: bool = False,
    handle_signals: bool = True,
) -> None:
    """Serve the API on `sock` (if any) and deliver (if `deliver`) until `shutdown` is set.

    Stops in order: uvicorn finishes the requests in flight, then the delivery loop drains
    and releases what it claimed. An API or delivery loop that fails stops the other and the
    failure is raised.
    """
    from leadhook.api.app import create_app  # here: `listen` needs this module, not the API

    shutdown = shutdown or asyncio.Event()
    stop = asyncio.Event()
    server: _Server | None = None
    tasks: list[asyncio.Task[None]] = []
    if sock is not None:
        config = uvicorn.Config(
            create_app(container),
            log_config=None,  # the command configures logging (`leadhook.cli.configure_logging`)
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=5,
            # h11 refuses a request head over this with a bare 400; below it, the app's
            # HeaderLimit answers 431 problem+json for heads over its own (smaller) limit.
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="api"))
    if deliver:
        dispatcher = container.make_dispatcher(concurrency=concurrency)
        tasks.append(asyncio.create_task(dispatcher.run(stop), name="dispatcher"))

    def force() -> None:
        if server is not None:
            server.force_exit = True

    signals = shutdown_on_signals(shutdown, force) if handle_signals else contextlib.nullcontext()
    with signals:
        await _until_started(server, tasks)
        if not any(t.done() for t in tasks):
            on_started()
        waiter = asyncio.create_task(shutdown.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if server is not None:
            server.should_exit = True
            await asyncio.wait(tasks[:1])
        stop.set()
        await asyncio.wait(tasks)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def _until_started(server: _Server | None, tasks: list[asyncio.Task[None]]) -> None:
    while server is not None and not server.started and not any(t.done() for t in tasks):
        await asyncio.sleep(0.02)
