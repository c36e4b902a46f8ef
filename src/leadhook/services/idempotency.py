"""Idempotency-Key: a retried request returns the first response and changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from leadhook.domain.errors import ConflictError
from leadhook.services.ports import Clock, StoredResponse, Transactor, UnitOfWork

T = TypeVar("T")
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

    def submit(
        self,
        tx: Transactor,
        mid: str,
        key: str | None,
        fp: str,
        work: Work,
        after_commit: Callable[[], None],
        lock_key: str | None = None,
    ) -> Future[tuple[int, str]]:
        """Submit `work` (with the key's check and record) to `tx`; answer in the future.

        `after_commit` runs once a fresh (not replayed) answer is committed; `lock_key` is
        the lead `work` locks first (`Transactor.submit`).
        """
        answer: Future[tuple[int, str]] = Future()

        def once(uow: UnitOfWork) -> tuple[tuple[int, str], bool]:
            if key is not None:
                stored = uow.idempotency.get(mid, key)
                if stored is not None:
                    return self._replay(stored, fp), False
            status, body = work(uow)
            if key is not None:
                uow.idempotency.put(mid, key, StoredResponse(fp, status, body), self._clock())
            return (status, body), True

        def first_done(done: Future[tuple[tuple[int, str], bool]]) -> None:
            exc = done.exception()
            if exc is None:
                result, fresh = done.result()
                if fresh:
                    after_commit()
                answer.set_result(result)
            elif isinstance(exc, ConflictError) and key is not None:
                # A concurrent request with the same key may have won the race: once it has
                # committed, answer what it answered; if it has not, the conflict stands.
                stored = tx.submit(lambda uow: self._stored(uow, mid, key, fp, exc), None, mid)
                stored.add_done_callback(lambda again: _settle(answer, again))
            else:
                answer.set_exception(exc)

        tx.submit(once, lock_key, mid).add_done_callback(first_done)
        return answer

    def _stored(
        self, uow: UnitOfWork, mid: str, key: str, fp: str, conflict: ConflictError
    ) -> tuple[int, str]:
        stored = uow.idempotency.get(mid, key)
        if stored is None:
            raise conflict
        return self._replay(stored, fp)

    @staticmethod
    def _replay(stored: StoredResponse, fp: str) -> tuple[int, str]:
        same_request(stored, fp)
        return stored.status_code, stored.body


def same_request(stored: StoredResponse, fp: str) -> None:
    """Refuse (409) a request whose key was first used by another (`fingerprint`)."""
    if stored.fingerprint != fp:
        raise ConflictError("this Idempotency-Key was already used for a different request")


def _settle(answer: Future[T], done: Future[T]) -> None:
    exc = done.exception()
    if exc is None:
        answer.set_result(done.result())
    else:
        answer.set_exception(exc)
