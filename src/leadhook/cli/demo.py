"""`leadhook demo`: the whole path in one process, from a behaviour to a verified delivery.

On temporary storage it starts the API and the delivery loop, a local receiver, creates a tenant,
its catalog and a subscription over HTTP, plays a few leads through every behaviour, and waits
until every event the API answered with has arrived at the receiver, signed and unchanged.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from leadhook.cli import common
from leadhook.cli.listen import render_event

if TYPE_CHECKING:
    import httpx
    from aiohttp import web

    from leadhook.receiver import Deduplicator, GapDetector

# The database, the API and the HTTP libraries load when the tour starts, not with
# `leadhook --help`.

MEMBER = {
    "operator_type": 2,
    "operator_id": 3021,
    "omni_user_uuid": "Rt5yU8iO2pA4sD6fG9hJ1k",
    "login_platform": "member_center",
    "login_source_value": "wx8f3a2b1c9d4e5f60",
    "login_source_type": "wechat",
    "login_environment": "mobile",
    "login_source_name": "径硕服务号",
}
BACK_OFFICE = {"operator_type": 1, "operator_id": 17, "login_platform": "jingsocial"}
CATALOG: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("members", "wang_fang", {"name": "王芳", "omni_user_uuid": "Rt5yU8iO2pA4sD6fG9hJ1k"}),
    ("members", "li_si", {"name": "李四"}),
    ("members", "zhang_wei", {"name": "张伟"}),
    ("business_types", "authing", {"name": "Authing", "default": True}),
    ("lead_statuses", "contacted", {"name": "已联系"}),
    ("lead_statuses", "qualified", {"name": "已确认"}),
    ("objects", "account", {"name": "客户", "object_id": "57"}),
)
MEMBER_NAMES = {key: body["name"] for kind, key, body in CATALOG if kind == "members"}
SYSTEM = None


@dataclass(frozen=True)
class Step:
    """One behaviour: what it means, the call (path after /v1/leads/{id}) and who acts."""

    description: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    operator: dict[str, Any] | None = field(default_factory=lambda: MEMBER)


LIVES: tuple[tuple[dict[str, Any], tuple[Step, ...]], ...] = (
    (
        {
            "fields": {"name": "赵拥晨", "mobile": "13800138000", "email": "zhao@example.com"},
            "lead_omni_user_uuid": "7wJy7CNpCPWnP7XMYwEHdn",
        },
        (
            Step(
                "update company and title",
                "PATCH",
                "",
                {"fields": {"company_id": "中山大学", "title": "CTO"}},
            ),
            Step("record the source", "PATCH", "/source", {"fields": {"utm_source": "newsletter"}}),
            Step(
                "a member claims it from the pool",
                "POST",
                "/owner",
                {"owner": "wang_fang", "scene_type": 3},
            ),
            Step("mark it contacted", "POST", "/status", {"leads_status": "contacted"}),
            Step(
                "log a follow-up call",
                "POST",
                "/notes",
                {"notes": "电话沟通, 试用意向强", "is_follow_up": True},
            ),
            Step(
                "add two collaborators",
                "POST",
                "/team-members",
                {"members": ["li_si", "zhang_wei"]},
            ),
            Step("remove a collaborator", "DELETE", "/team-members/zhang_wei", {}),
            Step("promote it to MQL", "POST", "/life-cycle", {"life_status": "mql"}),
            Step(
                "relate it to an account",
                "POST",
                "/relations",
                {"target_object_name": "account", "target_entity_id": "ACME-001"},
            ),
            Step(
                "a rule reclaims it into a pool",
                "POST",
                "/owner",
                {"owner": None, "scene_type": 5, "lead_pool": "sales"},
                SYSTEM,
            ),
            Step(
                "move it back to the market pool",
                "POST",
                "/lead-pool",
                {"lead_pool": "market"},
                BACK_OFFICE,
            ),
            Step("void it as a duplicate", "POST", "/void", {"reason": "重复线索"}, BACK_OFFICE),
            Step("restore it", "POST", "/restore", {}, BACK_OFFICE),
        ),
    ),
    (
        {"fields": {"name": "李雷", "company_id": "Acme"}, "owner": "li_si"},
        (
            Step("promote it to SQL", "POST", "/life-cycle", {"life_status": "sql"}),
            Step("qualify it", "POST", "/status", {"leads_status": "qualified"}),
            Step("win the deal", "POST", "/life-cycle", {"life_status": "customer"}),
        ),
    ),
    ({"fields": {"name": "韩梅梅"}}, (Step("void a test lead", "POST", "/void", {}, SYSTEM),)),
)


class DemoError(Exception):
    """The API refused a step of the tour."""


@dataclass
class DemoReceiver:
    """The subscriber's side: verify every delivery and compare it with what the API emitted."""

    console: Console
    secret: str = ""
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    verified: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    duplicates: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    dedup: Deduplicator = field(init=False)
    gaps: GapDetector = field(init=False)

    def __post_init__(self) -> None:
        from leadhook.receiver import Deduplicator, GapDetector

        self.dedup = Deduplicator()
        self.gaps = GapDetector(start_at_one=True)

    async def handle(self, request: web.Request) -> web.Response:
        """Answer 204 for a verified event, 401 or 400 otherwise."""
        from aiohttp import web

        from leadhook.receiver import InvalidPayload, SignatureError, verify_and_parse

        body = await request.read()
        try:
            event = verify_and_parse(body, request.headers, self.secret)
        except (SignatureError, InvalidPayload) as exc:
            self.problems.append(f"rejected a delivery: {exc}")
            self.changed.set()
            return web.Response(status=401 if isinstance(exc, SignatureError) else 400)
        if self.dedup.is_duplicate(event):
            self.duplicates += 1
            return web.Response(status=204)
        gap = self.gaps.observe(event)
        if gap is not None:
            self.problems.append(f"lead {gap.entity_id}: versions {list(gap.versions)} missing")
        self.console.print(render_event(event, verified=True, member_names=MEMBER_NAMES))
        self.bodies[event.event_id] = json.loads(body)
        self.verified[event.event_id] = event.event_type
        self.changed.set()
        return web.Response(status=204)

    def done(self) -> bool:
        """Tell whether every expected event arrived verified."""
        return bool(self.expected) and all(e in self.verified for e in self.expected)


class Api:
    """A small client of the HTTP API that collects the events behaviours emit."""

    def __init__(self, client: httpx.AsyncClient, emitted: dict[str, dict[str, Any]]) -> None:
        self.client = client
        self.emitted = emitted

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, token: str = ""
    ) -> dict[str, Any]:
        """Send one request; fail loudly on an unexpected status."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await self.client.request(method, path, json=body, headers=headers)
        if resp.status_code >= 300:
            raise DemoError(f"{method} {path} answered {resp.status_code}: {resp.text}")
        data: dict[str, Any] = resp.json() if resp.content else {}
        for event in data.get("events", []):
            self.emitted[event["event_id"]] = event
        return data


async def play(api: Api, token: str, progress: Progress, task: TaskID) -> None:
    """Play every lead's life through the API, one behaviour at a time."""
    for create, steps in LIVES:
        progress.update(task, description=f"create lead {create['fields']['name']}")
        lead = (await api.call("POST", "/v1/leads", create, token=token))["lead"]
        progress.advance(task)
        for step in steps:
            progress.update(task, description=step.description)
            body = step.body
            if body is not None and step.operator is not None:
                body = {**body, "operator": step.operator}
            await api.call(step.method, f"/v1/leads/{lead['id']}{step.path}", body, token=token)
            progress.advance(task)
    progress.update(task, description="every behaviour played")


async def run_demo(console: Console, *, timeout: float = 30.0) -> int:
    """Run the tour; return 0 when every emitted event arrived verified, else 1."""
    import httpx
    from aiohttp import web

    from leadhook.adapters.secretbox import generate_key
    from leadhook.bootstrap import build
    from leadhook.cli.runtime import base_url, bind, run_service
    from leadhook.domain.retry import RetryPolicy
    from leadhook.settings import Settings

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="leadhook-demo-") as tmp:
        admin = secrets.token_urlsafe(24)
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'demo.db'}",
            admin_token=admin,
            allow_private_targets=True,
            retry_policy=RetryPolicy(schedule=(0.2, 0.5, 1.0, 2.0)),
            delivery_timeout=5.0,
            # A key of this run only: the demo's database goes with its temporary directory,
            # and no key file is made (nor announced as one to keep and back up).
            secret_keys=(generate_key(),),
        )
        container = build(settings)
        api_sock, hook_sock = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
        receiver = DemoReceiver(console)
        app = web.Application()
        app.router.add_post("/webhooks/leadhook", receiver.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, hook_sock).start()
        shutdown, ready = asyncio.Event(), asyncio.Event()
        service = asyncio.create_task(
            run_service(
                container,
                sock=api_sock,
                shutdown=shutdown,
                on_started=ready.set,
                log_level="warning",
                handle_signals=False,
            )
        )
        try:
            await _wait_ready(ready, service)
            async with httpx.AsyncClient(base_url=base_url(api_sock), timeout=10) as client:
                api = Api(client, receiver.expected)
                code = await _tour(console, api, admin, receiver, base_url(hook_sock), timeout)
        except DemoError as exc:
            console.print(Text(f"✘ {exc}", "bold red"))
            code = 1
        finally:
            shutdown.set()
            await asyncio.wait([service])
            await runner.cleanup()
            container.close()
        error = None if service.cancelled() else service.exception()
        if error is not None:
            raise error
    console.print(f"Demo finished in {time.monotonic() - started:.1f}s.")
    return code


async def _wait_ready(ready: asyncio.Event, service: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([waiter, service], return_when=asyncio.FIRST_COMPLETED)
    if service.done():
        waiter.cancel()
        service.result()  # raises what stopped the service
        raise RuntimeError("the API stopped before it started")


async def _tour(
    console: Console, api: Api, admin: str, receiver: DemoReceiver, hook_url: str, timeout: float
) -> int:
    console.print("[bold]leadhook demo[/]: API, delivery loop and a receiver, all on 127.0.0.1.")
    tenant = await api.call("POST", "/v1/tenants", {"mid": "demo", "name": "演示公司"}, token=admin)
    token = tenant["api_key"]
    for kind, key, body in CATALOG:
        await api.call("PUT", f"/v1/catalog/{kind}/{key}", body, token=token)
    sub = await api.call(
        "POST",
        "/v1/subscriptions",
        {"url": f"{hook_url}/webhooks/leadhook", "event_types": ["*"], "description": "demo"},
        token=token,
    )
    receiver.secret = sub["secret"]
    console.print(f"Tenant demo, catalog, and a subscription to every event at {hook_url}.")
    steps = sum(1 + len(life) for _, life in LIVES)
    progress = Progress(
        TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    played = progress.add_task("behaviours", total=steps)
    arrived = progress.add_task("events delivered and verified", total=None)
    with Live(progress, console=console, refresh_per_second=12, transient=True):
        await play(api, token, progress, played)
        progress.update(arrived, total=len(receiver.expected))
        deadline = time.monotonic() + timeout
        while not receiver.done() and time.monotonic() < deadline:
            receiver.changed.clear()
            progress.update(arrived, completed=len(receiver.verified))
            try:
                await asyncio.wait_for(receiver.changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        progress.update(arrived, completed=len(receiver.verified))
    return _report(console, receiver)


def _report(console: Console, receiver: DemoReceiver) -> int:
    from leadhook.domain.events import EVENT_TYPES

    sent = Counter(e["event_type"] for e in receiver.expected.values())
    got = Counter(receiver.verified[e] for e in receiver.expected if e in receiver.verified)
    table = Table("event type", "emitted", "verified", title="Every event type, end to end")
    for event_type in EVENT_TYPES:
        ok = sent[event_type] > 0 and got[event_type] == sent[event_type]
        mark = Text("✔", "green") if ok else Text("✘", "red")
        table.add_row(
            Text.assemble(mark, " ", event_type), str(sent[event_type]), str(got[event_type])
        )
    console.print(table)
    missing = [e for e in receiver.expected if e not in receiver.verified]
    changed = [
        e
        for e, sent in receiver.expected.items()
        if e in receiver.bodies and receiver.bodies[e] != sent
    ]
    problems: Sequence[str] = [
        *receiver.problems,
        *(f"event {e} never arrived" for e in missing),
        *(f"event {e} arrived different from the API's answer" for e in changed),
    ]
    if set(sent) != set(EVENT_TYPES):
        problems = [*problems, "not every event type was emitted"]
    for problem in problems:
        console.print(Text(f"✘ {problem}", "bold red"))
    if problems:
        return 1
    console.print(
        f"[bold green]✔ {len(receiver.verified)} of {len(receiver.expected)} events delivered,"
        f" signatures verified, unchanged and in order per lead"
        f" ({receiver.duplicates} redeliveries dropped).[/]"
    )
    return 0


def demo(
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for every event to arrive.")
    ] = 30.0,
) -> None:
    """Run a self-contained tour: every behaviour, every event delivered, verified and shown."""
    from leadhook.cli.runtime import run_async

    raise typer.Exit(run_async(run_demo(common.console, timeout=timeout)))
