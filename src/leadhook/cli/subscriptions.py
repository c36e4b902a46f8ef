"""`leadhook subscriptions` and `leadhook deliveries`: a tenant's webhooks, without HTTP.

What the API's subscription and delivery calls do, for an operator at the server's shell: the
same services (so the same checks and answers), and with `--json` the API's own bodies.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from leadhook.cli.common import (
    AsJson,
    DatabaseUrl,
    all_pages,
    console,
    existing_database,
    load_settings,
    opened,
    print_table,
)

subscriptions_app = typer.Typer(
    help="List, create, enable, disable, test and replay a tenant's webhook subscriptions,"
    " and send them the events they missed."
)
deliveries_app = typer.Typer(help="List a tenant's deliveries and send one again.")

Mid = Annotated[str, typer.Argument(help="The tenant id.")]
SubId = Annotated[str, typer.Argument(help="The subscription id (see `subscriptions list`).")]


def _time(ts: str | None) -> str:
    # The bodies hold RFC 3339 in UTC (`2026-12-01T08:30:00.250Z`): shown to the second.
    return "-" if ts is None else ts[:19].replace("T", " ")


def _table(title: str, *columns: str) -> Table:
    """A table whose first column, the id, is never cut (it is what the next command takes)."""
    table = Table(title=title)
    table.add_column("id", no_wrap=True, min_width=22)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _print_subscription(sub: dict[str, Any]) -> None:
    state = sub["circuit"]["state"]
    enabled = "enabled" if sub["enabled"] else f"disabled ({sub['disabled_reason']})"
    console.print(f"Subscription {sub['id']}: {sub['url']}", markup=False)
    console.print(f"  event types: {', '.join(sub['event_types'])}; {enabled}", markup=False)
    console.print(f"  circuit: {state}; created {_time(sub['created_at'])} UTC", markup=False)


@subscriptions_app.command("list")
def subscriptions_list(mid: Mid, database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """List the tenant's subscriptions, oldest first, with their circuit (never a secret)."""
    from leadhook.api import bodies

    with opened(
        existing_database(load_settings(database_url=database_url)), listing=True
    ) as container:
        container.tenants.get(mid)  # a mistyped tenant is "not found" (1), not an empty list
        now, subs = container.clock(), container.subscriptions
        found = all_pages(lambda cursor: bodies.subscriptions(subs.list(mid, cursor, 200), now))
    if as_json:
        console.print_json(json.dumps({"data": found}))
        return
    table = _table(
        f"Subscriptions of {mid}",
        "url", "event types", "enabled", "circuit", "failing since (UTC)",
    )  # fmt: skip
    for s in found:
        table.add_row(
            s["id"], s["url"], ", ".join(s["event_types"]), "yes" if s["enabled"] else "no",
            s["circuit"]["state"], _time(s["failing_since"]),
        )  # fmt: skip
    print_table(table)


@subscriptions_app.command("create")
def subscriptions_create(
    mid: Mid,
    url: Annotated[str, typer.Option(help="The endpoint: an absolute http:// or https:// URL.")],
    event_type: Annotated[
        list[str] | None,
        typer.Option(help="An event type to receive; repeat it. Default: every type (*)."),
    ] = None,
    description: Annotated[str | None, typer.Option(help="A note for people.")] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Create a subscription and print its signing secret."""
    from leadhook.api import bodies

    fields: dict[str, Any] = {"url": url, "event_types": event_type or ["*"]}
    if description is not None:
        fields["description"] = description
    with opened(existing_database(load_settings(database_url=database_url))) as container:
        made = container.subscriptions.create(mid, fields)
        sub = bodies.subscription_with_secret(made, container.clock()).model_dump()
    if as_json:
        console.print_json(json.dumps(sub))
        return
    _print_subscription(sub)
    console.print("Signing secret (give it to the receiver; `GET …/secret` reads it again):")
    console.print(f"  {sub['secret']}", markup=False)


def _switch(mid: str, sub_id: str, enabled: bool, database_url: str | None) -> None:
    from leadhook.api import bodies

    with opened(existing_database(load_settings(database_url=database_url))) as container:
        changed = container.subscriptions.update(
            mid, sub_id, {"enabled": enabled}, via="the command line"
        )
        sub = bodies.subscription(changed, container.clock()).model_dump()
    _print_subscription(sub)


@subscriptions_app.command("enable")
def subscriptions_enable(mid: Mid, sub_id: SubId, database_url: DatabaseUrl = None) -> None:
    """Enable a subscription: its waiting deliveries are sent again."""
    _switch(mid, sub_id, True, database_url)


@subscriptions_app.command("disable")
def subscriptions_disable(mid: Mid, sub_id: SubId, database_url: DatabaseUrl = None) -> None:
    """Disable a subscription until enabled: its unfinished deliveries wait, new events skip it.

    Events that happen while it is disabled are not queued for it: read them from
    GET /v1/events once it is enabled again."""
    _switch(mid, sub_id, False, database_url)


@subscriptions_app.command("test")
def subscriptions_test(
    mid: Mid, sub_id: SubId, database_url: DatabaseUrl = None, as_json: AsJson = False
) -> None:
    """Send a signed `webhook_test` event now and show the endpoint's answer.

    Exits 1 if the endpoint did not acknowledge it with a 2xx."""
    from leadhook.api import bodies

    with opened(existing_database(load_settings(database_url=database_url))) as container:
        result = asyncio.run(container.subscriptions.send_test(mid, sub_id))
    out = bodies.test_result(result).model_dump()
    if as_json:
        console.print_json(json.dumps(out))
    else:
        attempt = out["attempt"]
        answer = (
            f"HTTP {attempt['status_code']}"
            if attempt["status_code"] is not None
            else f"no answer ({attempt['error']})"
        )
        verdict = "acknowledged" if out["success"] else "NOT acknowledged"
        console.print(
            f"Test event {out['event']['event_id']}: {answer} in {attempt['latency_ms']:.0f} ms,"
            f" {verdict}.",
            markup=False,
        )
    if not out["success"]:
        raise typer.Exit(1)


@subscriptions_app.command("replay")
def subscriptions_replay(
    mid: Mid,
    sub_id: SubId,
    since: Annotated[
        str,
        typer.Option(
            help="Replay deliveries created since then: RFC 3339 with a zone, or unix seconds."
        ),
    ],
    status: Annotated[
        str | None,
        typer.Option(
            help="Only `dead` or only `delivered` ones (default: both); `failed`: the ones"
            " waiting for a retry, sent now."
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Queue again the subscription's finished deliveries created since a time.

    With --status failed: send now, each with a fresh schedule, those waiting for a retry.
    """
    with opened(existing_database(load_settings(database_url=database_url))) as container:
        count = container.subscriptions.replay(mid, sub_id, _unix_or_text(since), status)
    what = "delivery" if count == 1 else "deliveries"
    how = "sent now, each with a fresh schedule" if status == "failed" else "queued again"
    console.print(f"{count} {what} of {sub_id} {how}.", markup=False)


@subscriptions_app.command("replay-missing")
def subscriptions_replay_missing(
    mid: Mid,
    sub_id: SubId,
    since: Annotated[
        str,
        typer.Option(
            help="Events created since then: RFC 3339 with a zone, or unix seconds (0: the"
            " whole log)."
        ),
    ],
    until: Annotated[
        str | None,
        typer.Option(help="Events created before then (the same forms); default: up to now."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Queue the logged events since a time that the subscription never got.

    Those of a period it was disabled, or from before it was created (a backfill). At most
    10,000 a run, oldest first; run it again for the rest (it says when more are missing).
    """
    with opened(existing_database(load_settings(database_url=database_url))) as container:
        count, more = container.subscriptions.replay_missing(
            mid, sub_id, _unix_or_text(since), None if until is None else _unix_or_text(until)
        )
    what = "missing event" if count == 1 else "missing events"
    rest = (
        " More are missing: run it again to queue the next ones."
        if more
        else " Nothing more is missing."
    )
    console.print(f"{count} {what} queued for {sub_id}.{rest}", markup=False)


def _unix_or_text(value: str) -> float | str:
    """`--since` as the API's `since` takes it: unix seconds (`0`, `1764979200.5`), else the
    text, an RFC 3339 date-time that the service reads (and refuses with the reason)."""
    try:
        return float(value) if value.strip().replace(".", "", 1).isdigit() else value
    except ValueError:
        return value


@deliveries_app.command("list")
def deliveries_list(
    mid: Mid,
    status: Annotated[str | None, typer.Option(help="pending, delivered, failed or dead.")] = None,
    subscription: Annotated[str | None, typer.Option(help="A subscription id.")] = None,
    lead: Annotated[str | None, typer.Option(help="A lead id.")] = None,
    event_type: Annotated[str | None, typer.Option(help="An event type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many, newest first.")] = 50,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """List the tenant's newest deliveries (across subscriptions), filtered."""
    from leadhook.api import bodies
    from leadhook.services.deliveries import delivery_filter

    with opened(
        existing_database(load_settings(database_url=database_url)), listing=True
    ) as container:
        container.tenants.get(mid)  # a mistyped tenant is "not found" (1), not an empty list
        filters = delivery_filter(
            status=status, event_type=event_type, lead_id=lead, subscription_id=subscription
        )
        page = bodies.deliveries(container.deliveries.list(mid, filters, None, limit))
    found = [d.model_dump() for d in page.data]
    if as_json:
        console.print_json(json.dumps({"data": found}))
        return
    table = _table(
        f"Deliveries of {mid}",
        "created (UTC)", "status", "subscription", "event type", "lead", "attempts*", "last error",
    )  # fmt: skip
    # The API's attempt_count: a retry or a replay starts a new schedule at 0; every attempt
    # made is in GET /v1/deliveries/{id}/attempts (and on the console's delivery page).
    table.caption = (
        "* attempts in the current schedule (a retry or a replay starts again at 0);"
        " every attempt: GET /v1/deliveries/{id}/attempts"
    )
    for d in found:
        table.add_row(
            d["id"], _time(d["created_at"]), d["status"], d["subscription_id"], d["event_type"],
            f"{d['entity_id']} v{d['entity_version']}", str(d["attempt_count"]),
            d["last_error"] or "",
        )  # fmt: skip
    print_table(table)


@deliveries_app.command("retry")
def deliveries_retry(
    mid: Mid,
    delivery_id: Annotated[str, typer.Argument(help="The delivery id (see `deliveries list`).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Send a failed, dead or delivered delivery again now, with a fresh retry schedule."""
    with opened(existing_database(load_settings(database_url=database_url))) as container:
        retried = container.subscriptions.retry(mid, delivery_id)
    console.print(f"Delivery {retried.id} queued again ({retried.status}).", markup=False)
