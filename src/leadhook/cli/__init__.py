"""The `leadhook` command line (`leadhook.cli:main` is the console script).

One module per job: `root` (the command, its options and the order of its commands),
`serve`, `worker`, `tenants` (tenants and their API keys), `secret_key`, `demo`, `listen`;
`runtime` runs the API and the delivery loop and supervises the delivery child process;
`common` and `logs` are what the commands share. Nothing here imports the database, the API
or the servers at module level.
"""

from __future__ import annotations

from leadhook.cli.root import app, main

__all__ = ["app", "main"]
