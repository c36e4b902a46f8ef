"""`leadhook secret-key`: a new key to encrypt webhook secrets at rest with;
`leadhook forget-secret-key`: the way back when that key is lost for good."""

from __future__ import annotations

import typer

from leadhook.cli.common import (
    DatabaseUrl,
    console,
    database_errors,
    display_url,
    existing_database,
    fail,
    load_settings,
)


def secret_key() -> None:
    """Print a new key for LEADHOOK_SECRET_KEY (to rotate: new key first, a comma, the old)."""
    from leadhook.adapters.secretbox import generate_key

    console.print(generate_key())


def forget_secret_key(
    yes: bool = typer.Option(
        False, "--yes", help="really replace every subscription's secret (no undo)"
    ),
    database_url: DatabaseUrl = None,
) -> None:
    """Forget a secret key lost for good: every subscription gets a new secret to rotate.

    Run with every leadhook process stopped. Refused while the configured key (or the key
    file beside the database) still opens the database. Afterwards, start leadhook on a new
    key and call POST /v1/subscriptions/{id}/rotate-secret for each subscription listed;
    until then their deliveries fail and are retried, none is lost.
    """
    from leadhook.bootstrap import forget_lost_key

    settings = existing_database(load_settings(database_url=database_url))
    where = display_url(settings.database_url)
    if not yes:
        fail(
            f"this replaces the webhook secret of every subscription in {where} with a new one"
            " nobody knows yet (each must then be rotated): run again with --yes",
            2,
        )
    with database_errors(settings.database_url):
        subs = forget_lost_key(settings)
    console.print(
        f"Forgot the lost key of {where}: {len(subs)} subscription(s) have a new secret."
        " Start leadhook with a new key, then rotate each one's secret"
        " (POST /v1/subscriptions/{id}/rotate-secret) and give it to its subscriber:"
    )
    for mid, sub_id in subs:
        console.print(f"  {mid}\t{sub_id}")
