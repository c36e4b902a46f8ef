"""What users build instead of leadhook: a Celery task per webhook, Redis as the broker.

Written the way its users write one: one task per event, `requests.post` with a timeout,
`autoretry_for` with exponential backoff, signed with the same Standard Webhooks headers.
Run a worker with:  celery -A bench.baselines.celery_dispatcher worker --pool prefork -c 2
"""

from __future__ import annotations

import os
import time
from typing import Any

import requests
from celery import Celery

from leadhook.domain.signing import webhook_headers

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")
app = Celery("leadhook_bench", broker=BROKER)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
_session = requests.Session()


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    autoretry_for=(requests.RequestException,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=12,
)
def deliver(self: Any, url: str, event_id: str, body: str, secret: str) -> int:
    """POST one event to one endpoint, signed; raise to retry on failure."""
    raw = body.encode()
    headers = webhook_headers([secret], event_id, int(time.time()), raw, "celery-baseline")
    resp = _session.post(url, data=raw, headers=headers, timeout=10)
    resp.raise_for_status()
    return resp.status_code
