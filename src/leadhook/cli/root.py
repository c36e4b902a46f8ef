"""The `leadhook` command itself: its options and its commands, one module per job."""

from __future__ import annotations

from typing import Annotated

import typer

from leadhook import __version__
from leadhook.cli.common import console
from leadhook.cli.demo import demo
from leadhook.cli.listen import listen
from leadhook.cli.secret_key import forget_secret_key, secret_key
from leadhook.cli.serve import serve
from leadhook.cli.subscriptions import deliveries_app, subscriptions_app
from leadhook.cli.tenants import tenants_app
from leadhook.cli.worker import worker

app = typer.Typer(
    name="leadhook",
    help="CRM lead events, recorded in a fixed contract and delivered to signed webhooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(tenants_app, name="tenants", no_args_is_help=True)
app.add_typer(subscriptions_app, name="subscriptions", no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"leadhook {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """leadhook: every behaviour on a CRM lead becomes an event, delivered to signed webhooks."""


# In this order in `leadhook --help` (the `tenants` group comes last there).
app.command()(serve)
app.command("secret-key")(secret_key)
app.command("forget-secret-key")(forget_secret_key)
app.command()(worker)
app.command()(demo)
app.command()(listen)


def main() -> None:
    """Run the command line (the `leadhook` console script)."""
    app()
