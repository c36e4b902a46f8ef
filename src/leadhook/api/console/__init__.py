"""The web console at /console: a tenant's leads, events, subscriptions and deliveries.

Served by `leadhook serve` itself, every asset from this package (templates/, static/): no
CDN and no front-end build. `install(app)` mounts it on the API's application.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.staticfiles import StaticFiles

from leadhook.api.console.routes import router, unknown_pages
from leadhook.api.console.session import SessionSigner


def install(app: FastAPI) -> APIRouter:
    """Mount the console's pages and static files; sign its sessions with the configured secret.

    Without `LEADHOOK_CONSOLE_SECRET` the secret is random per process: sessions end when the
    process restarts, and a browser signed in on one process is not on another. Returns the
    router of the pages.
    """
    app.state.console_signer = SessionSigner(app.state.container.settings.console_secret)
    app.include_router(router)
    app.mount(
        "/console/static",
        StaticFiles(packages=[("leadhook.api.console", "static")]),
        name="console-static",
    )
    app.include_router(unknown_pages)
    return router
