"""`leadhook listen`: a local receiver that verifies deliveries and pretty-prints their events."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.text import Text

from leadhook.cli import common
from leadhook.domain.signing import subscriber_key

if TYPE_CHECKING:
    import httpx
    from aiohttp import web

    from leadhook.receiver import LeadEvent

# The receiver's own libraries (aiohttp, httpx, pydantic) load when it starts, not with
# `leadhook --help`.

SCENES = {
    1: "automatic allocation",
    2: "manual allocation",
    3: "claimed from a pool",
    4: "returned to a pool",
    5: "reclaimed into a pool",
    6: "duplicate merge",
}
OPERATORS = {0: "system", 1: "back-office user", 2: "member"}
# Not passed on when forwarding: they describe this hop, not the delivery.
HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade"}
)


# What a terminal acts on rather than shows: C0 and C1 controls (ESC starts a colour, a
# title, a clear screen; a line break starts a line that can pass for one of ours), the line
# and paragraph separators and the bidirectional overrides that reorder what follows.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(value: Any) -> str:
    """`value` as text a terminal shows as it is: each control character escaped (`\\x1b`,
    `\\n`, `\\u202e`). Every text of an event is the sender's, and a lead's field values
    come from web forms: one must not colour, clear or forge the listener's lines."""

    def escape(found: re.Match[str]) -> str:
        char = found.group()
        named = _NAMED.get(char)
        if named is not None:
            return named
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROLS.sub(escape, str(value))


def _side(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _mark(verified: bool) -> str:
    """How a delivery's line begins: whether its signature was checked."""
    return "✔ verified  " if verified else "⚠ unverified  "


def render_event(
    event: LeadEvent, *, verified: bool, member_names: Mapping[str, str] | None = None
) -> Text:
    """Describe one event in a few lines: type, lead, version, then each change with labels.

    Owners show by name (the event's display text carries it); team members travel as ids,
    so `member_names` (member id → display name, e.g. from the tenant's catalog) names them.
    """
    extra = event.extra_data
    line = Text()
    line.append(_mark(verified), "green" if verified else "yellow")
    line.append(f"{event.event_type:<26}", "bold cyan")
    line.append(f" lead {shown(extra.entity_id)}  v{event.entity_version}")
    line.append(f"  by {OPERATORS.get(extra.operator_type, '?')}", "dim")
    if extra.operator_id:
        line.append(f" {shown(extra.operator_id)}", "dim")
    elif extra.operator_type and extra.omni_user_uuid:
        # A member bound to no numeric id (a claim from a pool): named by its user id.
        line.append(f" {shown(extra.omni_user_uuid)}", "dim")
    if event.action_keyword != event.event_type:
        line.append(f"  ({shown(event.action_keyword)})", "magenta")
    for detail in _details(event, member_names or {}):
        line.append("\n      ")
        line.append(shown(detail))
    return line


def _details(event: LeadEvent, member_names: Mapping[str, str]) -> list[str]:
    extra = event.extra_data
    texts: Mapping[str, Any] = extra.mapping_data_text
    out: list[str] = []
    for code, values in extra.mapping_data.items():
        text = texts.get(code)
        if event.event_type == "object_create":
            out.append(f"{code} = {text if isinstance(text, str) else _side(values[0])}")
        else:
            before, after = (text if isinstance(text, list) else [_side(v) for v in values])[:2]
            out.append(f"{code}: {before} → {after}")
    own = extra.model_dump()
    if extra.notes:
        out.append(f"notes: {extra.notes!r}" + (" (follow-up)" if extra.is_follow_up else ""))
    if "members" in own:
        out.append("members: " + ", ".join(_member(m, member_names) for m in own["members"]))
    if "scene_type" in own:
        out.append(f"scene {own['scene_type']}: {SCENES.get(own['scene_type'], '?')}")
    if "target_object_name" in own:
        out.append(
            f"related to {own['target_object_name']} {own['target_entity_id']}"
            f" (object id {own['target_object_id'] or '-'})"
        )
    return out


def _member(member_id: str, names: Mapping[str, str]) -> str:
    name = names.get(member_id)
    return member_id if not name else f"{name} ({member_id})"


@dataclass
class Listener:
    """Verify, show and optionally forward each delivery; count what happened."""

    console: Console
    secrets: Sequence[str]
    forward_to: str | None = None
    client: httpx.AsyncClient | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"received": 0, "verified": 0, "rejected": 0}
    )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer 204, 401 (bad signature), 400 (not an event) or the forward target's status
        (an event of a type this version does not know is acknowledged and forwarded)."""
        from aiohttp import web

        from leadhook.receiver import (
            InvalidPayload,
            SignatureError,
            UnknownEventReceived,
            WebhookTestReceived,
            parse,
            verify_and_parse,
        )

        if request.method != "POST":
            return web.Response(text="leadhook listen: POST webhook deliveries here\n")
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.counts["received"] += 1
        verified = bool(self.secrets)
        try:
            event = verify_and_parse(body, headers, self.secrets) if verified else parse(body)
        except WebhookTestReceived as test:
            self.counts["verified"] += int(verified)
            message = test.event.get("data", {}).get("message", "")
            self.console.print(
                Text(
                    f"{_mark(verified)}{shown(test.event.get('event_type'))}  {shown(message)}",
                    "green",
                )
            )
            return await self._answer(body, headers)
        except UnknownEventReceived as newer:
            self.counts["verified"] += int(verified)
            self.console.print(
                Text(
                    f"{_mark(verified)}{shown(newer.event.get('event_type'))}"
                    f"  {shown(newer.event.get('event_id'))}"
                    "  (a type this leadhook does not know: acknowledged, not shown)",
                    "yellow",
                )
            )
            return await self._answer(body, headers)
        except (SignatureError, InvalidPayload) as exc:
            self.counts["rejected"] += 1
            status = 401 if isinstance(exc, SignatureError) else 400
            self.console.print(Text(f"✘ rejected ({status}): {shown(exc)}", "bold red"))
            return web.Response(status=status, text=f"{exc}\n")
        self.counts["verified"] += int(verified)
        self.console.print(render_event(event, verified=verified))
        return await self._answer(body, headers)

    async def _answer(self, body: bytes, headers: Mapping[str, str]) -> web.Response:
        import httpx
        from aiohttp import web

        if self.forward_to is None or self.client is None:
            return web.Response(status=204)
        label = f"{headers.get('webhook-id', '?')} to {self.forward_to}"
        passed = {k: v for k, v in headers.items() if k not in HOP_HEADERS}
        try:
            resp = await self.client.post(self.forward_to, content=body, headers=passed)
        except httpx.HTTPError as exc:
            self.console.print(Text(f"      → forwarding {label} failed: {exc!r}", "red"))
            return web.Response(status=502, text=f"forwarding failed: {exc!r}\n")
        self.console.print(Text(f"      → forwarded {label}: {resp.status_code}", "dim"))
        keep = {k: v for k, v in resp.headers.items() if k.lower() == "retry-after"}
        body_out = resp.content if resp.status_code not in (204, 304) else None
        return web.Response(status=resp.status_code, body=body_out, headers=keep)


def check_secrets(secrets: Sequence[str]) -> None:
    """Refuse (ValueError) a secret that is not a subscription's whsec_ secret."""
    for s in secrets:
        try:
            subscriber_key(s)
        except ValueError as exc:
            raise ValueError(f"--secret (or LEADHOOK_LISTEN_SECRET) {s[:10]}…: {exc}") from None


async def run_listener(
    console: Console,
    sock: socket.socket,
    *,
    secrets: Sequence[str],
    forward_to: str | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, int]:
    """Serve deliveries on `sock` until SIGINT/SIGTERM (or `stop`); return the counts."""
    import httpx
    from aiohttp import web

    from leadhook.cli.runtime import base_url, shutdown_on_signals

    check_secrets(secrets)
    client = httpx.AsyncClient(timeout=10.0) if forward_to else None
    listener = Listener(console, list(secrets), forward_to, client)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", listener.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    url = base_url(sock)
    console.print(f"[bold green]leadhook listen[/] receiving webhook deliveries at {url}/")
    if secrets:
        console.print(f"Verifying signatures with {len(secrets)} secret(s).")
    else:
        console.print(
            "[bold yellow]warning: no --secret given: deliveries are shown UNVERIFIED."
            " Pass the subscription's whsec_ secret to check their signatures.[/]"
        )
    if forward_to:
        console.print(f"Forwarding each delivery to {forward_to}.", markup=False)
    console.print("Press Ctrl-C to stop.")
    stop = stop or asyncio.Event()
    started = time.monotonic()
    try:
        with shutdown_on_signals(stop, lambda: None):
            await stop.wait()
    finally:
        await runner.cleanup()
        if client is not None:
            await client.aclose()
    c = listener.counts
    console.print(
        f"Stopped after {time.monotonic() - started:.0f}s: {c['received']} received,"
        f" {c['verified']} verified, {c['rejected']} rejected."
    )
    return listener.counts


def listen(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8787,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            envvar="LEADHOOK_LISTEN_SECRET",
            help="The subscription's whsec_ secret; repeat it during a rotation (in"
            " LEADHOOK_LISTEN_SECRET, separate them with commas or spaces).",
        ),
    ] = None,
    forward_to: Annotated[
        str | None,
        typer.Option("--forward-to", help="Also POST each delivery, as received, to this URL."),
    ] = None,
) -> None:
    """Receive deliveries locally: verify their signature and pretty-print each event."""
    from leadhook.cli.runtime import bind, run_async

    if forward_to is not None:
        try:
            target = urlsplit(forward_to)
            hostname = target.hostname
        except ValueError:  # "http://[::1": not a URL at all
            hostname = None
        if hostname is None or target.scheme not in ("http", "https"):
            common.fail(f"--forward-to must be an http:// or https:// URL, not {forward_to!r}", 2)
    # Several secrets: repeated options, or one value (the environment's) split at commas
    # or spaces, as LEADHOOK_SECRET_KEY's list is written. A bad one is a bad option (2),
    # said before the port is tried, whether it is free or not.
    secrets = [part for item in secret or [] for part in item.replace(",", " ").split()]
    try:
        check_secrets(secrets)
    except ValueError as exc:
        common.fail(str(exc), 2)
    try:
        sock = bind(host, port)
    except OSError as exc:
        common.fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        run_async(run_listener(common.console, sock, secrets=secrets, forward_to=forward_to))
    except ValueError as exc:
        common.fail(str(exc), 2)
