"""Idempotency-Key: a retried request returns the first response and changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from leadhook.domain.errors import ConflictError
from leadhook.services.ports import Clock, StoredResponse, UnitOfWork, UnitOfWorkFactory

Work = Callable[[UnitOfWork], tuple[int, str]]


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Identify a request by what it asks, so a key reused for another request is caught."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class Idempotent:
    """Run a unit of work once per (tenant, key); replay its stored response afterwards."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def run(
        self,
        uow_factory: UnitOfWorkFactory,
        mid: str,
        key: str | None,
        fp: str,
        work: Work,
        after_commit: Callable[[], None],
    ) -> tuple[int, str]:
        """Run `work` in a new unit of work and commit, unless `key` has answered already."""
        try:
            with uow_factory() as uow:
                if key is not None:
                    stored = uow.idempotency.get(mid, key)
                    if stored is not None:
                        return self._replay(stored, fp)
                status, body = work(uow)
                if key is not None:
                    uow.idempotency.put(mid, key, StoredResponse(fp, status, body), self._clock())
                uow.commit()
        except ConflictError:
            if key is None:
                raise
            # A concurrent request with the same key won the race: answer what it answered.
            with uow_factory() as uow:
                stored = uow.idempotency.get(mid, key)
            if stored is None:
                raise
            return self._replay(stored, fp)
        after_commit()
        return status, body

    @staticmethod
    def _replay(stored: StoredResponse, fp: str) -> tuple[int, str]:
        if stored.fingerprint != fp:
            raise ConflictError("this Idempotency-Key was already used for a different request")
        return stored.status_code, stored.body
