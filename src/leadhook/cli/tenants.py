"""`leadhook tenants`: create tenants and list, issue and revoke their API keys, without HTTP."""

from __future__ import annotations

import json
from typing import Annotated

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
from leadhook.domain.times import rfc3339

tenants_app = typer.Typer(help="Create tenants and manage their API keys, without HTTP calls.")
keys_app = typer.Typer(help="List, issue and revoke a tenant's API keys.")
tenants_app.add_typer(keys_app, name="keys", no_args_is_help=True)


@tenants_app.command("create")
def tenants_create(
    mid: Annotated[str, typer.Argument(help="The tenant id (1-64 ASCII letters, digits, _ or -).")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the mid).")] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone (default: Asia/Shanghai).")
    ] = None,
    object_id: Annotated[
        str | None, typer.Option(help="The lead object's id in events (default: 56).")
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Create a tenant with the default catalog and print its first API key (shown once)."""
    from leadhook.api import bodies

    with opened(load_settings(database_url=database_url)) as container:
        made = container.tenants.create(mid, name, timezone, object_id)
    tenant = bodies.new_tenant(made).model_dump()
    if as_json:
        console.print_json(json.dumps(tenant))
        return
    console.print(
        f"Tenant {tenant['mid']} created: name {tenant['name']!r}, time zone"
        f" {tenant['timezone']}, object id {tenant['object_id']}.",
        markup=False,
    )
    _print_new_key(tenant["api_key"], tenant["key_id"])


@tenants_app.command("list")
def tenants_list(database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """List every tenant, oldest first: mid, name, time zone, object id, created."""
    from leadhook.api import bodies

    with opened(
        existing_database(load_settings(database_url=database_url)), listing=True
    ) as container:
        tenants = container.tenants
        found = all_pages(lambda cursor: bodies.tenants(tenants.list_tenants(cursor, 200)))
    if as_json:
        console.print_json(json.dumps({"data": found}))
        return
    table = Table("mid", "name", "time zone", "object id", "created (UTC)", title="Tenants")
    for t in found:
        table.add_row(
            str(t["mid"]), str(t["name"]), str(t["timezone"]), str(t["object_id"]),
            _when(str(t["created_at"])),
        )  # fmt: skip
    print_table(table)


def _print_new_key(api_key: str, key_id: str) -> None:
    console.print("API key ([bold]shown once[/]: store it now; only its hash is kept):")
    console.print(f"  {api_key}")
    console.print(f"Key id: {key_id}")
    console.print(
        f"Use it as: curl -H 'Authorization: Bearer {api_key}' BASE/v1/catalog, BASE being"
        " the address `leadhook serve` printed (http://127.0.0.1:8000 unless --port or --host"
        " set another)",
        markup=False,
    )


@keys_app.command("list")
def keys_list(
    mid: Annotated[str, typer.Argument(help="The tenant id.")],
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """List a tenant's keys: id, prefix, created, revoked (never the keys themselves)."""
    from leadhook.api import bodies

    with opened(
        existing_database(load_settings(database_url=database_url)), listing=True
    ) as container:
        keys = bodies.keys(container.tenants.list_keys(mid)).model_dump()["data"]
    if as_json:
        console.print_json(json.dumps({"data": keys}))
        return
    table = Table("key id", "prefix", "created (UTC)", "revoked (UTC)", title=f"API keys of {mid}")
    for key in keys:
        table.add_row(
            key["id"], key["prefix"] + "…", _when(key["created_at"]), _when(key["revoked_at"])
        )
    print_table(table)


def _when(ts: str | None) -> str:
    # The services answer RFC 3339 in UTC (`2026-12-01T08:30:00.250Z`): show it to the minute.
    if ts is None:
        return "-"
    return ts[:16].replace("T", " ")


@keys_app.command("issue")
def keys_issue(
    mid: Annotated[str, typer.Argument(help="The tenant id.")],
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Issue another API key for a tenant (shown once)."""
    from leadhook.api import bodies

    with opened(existing_database(load_settings(database_url=database_url))) as container:
        key = bodies.new_key(container.tenants.issue_key(mid)).model_dump()
    if as_json:
        console.print_json(json.dumps(key))
        return
    _print_new_key(key["api_key"], key["id"])


@keys_app.command("revoke")
def keys_revoke(
    mid: Annotated[str, typer.Argument(help="The tenant id.")],
    key_id: Annotated[str, typer.Argument(help="The key id (see `keys list`).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: requests with it answer 401 from now on."""
    with opened(existing_database(load_settings(database_url=database_url))) as container:
        before = container.tenants.revoke_key(mid, key_id)
    if before is None:
        console.print(f"Key {key_id} of {mid} revoked.")
    else:
        at = _when(rfc3339(before))
        console.print(f"Key {key_id} of {mid} was already revoked, at {at} UTC: nothing changed.")
