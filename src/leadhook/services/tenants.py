"""Tenants, their API keys and their catalogs."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from leadhook.domain.catalog import (
    DEFAULT_OBJECT_ID,
    DEFAULT_TIMEZONE,
    Catalog,
    has_control,
    validate_key,
)
from leadhook.domain.catalog_entries import (
    check_catalog_size,
    find_entry,
    upsert_entry,
    validate_timezone,
)
from leadhook.domain.errors import (
    FieldProblem,
    NotFoundError,
    UnauthorizedError,
    ValidationError,
)
from leadhook.services.ports import ApiKey, Clock, IdFactory, Page, Tenant, UnitOfWorkFactory

KEY_PREFIX = "lh_"
# A revoked key stops working at once in the process that revoked it, and within this many
# seconds in every other process sharing the database.
AUTH_CACHE_SECONDS = 2.0


def hash_key(key: str) -> str:
    """Hash an API key for storage; keys are random, so a plain SHA-256 is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """An API key just issued, and the key itself (shown this once, never stored)."""

    key: ApiKey
    api_key: str


@dataclass(frozen=True)
class NewTenant:
    """A tenant just created, with its first key."""

    tenant: Tenant
    key: ApiKey
    api_key: str


class TenantService:
    """Create tenants, issue and revoke keys, authenticate keys, read and change catalogs."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        ids: IdFactory,
        readonly_uow: UnitOfWorkFactory | None = None,
    ) -> None:
        self._uow = uow
        self._read = readonly_uow or uow
        self._clock = clock
        self._ids = ids
        # key hash → (mid, valid until): one database read per key per AUTH_CACHE_SECONDS.
        self._auth_cache: dict[str, tuple[str, float]] = {}

    def create(
        self,
        mid: Any,
        name: Any = None,
        timezone: Any = None,
        object_id: Any = None,
    ) -> NewTenant:
        """Create a tenant with the default catalog and its first key (shown only here)."""
        if not isinstance(mid, str):
            raise ValidationError.at(("body", "mid"), "is required and must be a string")
        with _located("body"):
            validate_key(mid, "mid")
        # Omitted is the default; an empty name is a bad one, not the default.
        tz = validate_timezone(DEFAULT_TIMEZONE if timezone is None else timezone)
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
            raise ValidationError.at(
                ("body", "name"), "must be a non-empty string of at most 200 characters"
            )
        if name is not None and has_control(name):  # as every catalog name (catalog_entries)
            raise ValidationError.at(("body", "name"), "must not contain control characters")
        if object_id is not None:  # one rule, whatever is wrong with it (a review)
            with _located("body"):
                validate_key(object_id, "object_id")
        catalog = Catalog.default(
            mid,
            self._ids.short(),
            name=name or mid,
            timezone=tz,
            object_id=object_id or DEFAULT_OBJECT_ID,
        )
        tenant = Tenant(mid, catalog, self._clock())
        with self._uow() as uow:
            uow.tenants.add(tenant)
            key, secret = self._new_key(mid)
            uow.tenants.add_key(key, hash_key(secret))
            uow.commit()
        return NewTenant(tenant, key, secret)

    def _new_key(self, mid: str) -> tuple[ApiKey, str]:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        return ApiKey(self._ids.short(), mid, secret[:10], self._clock()), secret

    def list_tenants(self, cursor: str | None, limit: int) -> Page[Tenant]:
        """Every tenant, oldest first; `cursor` from the page before (400 if malformed)."""
        with self._read() as uow:
            return uow.tenants.page(cursor, limit)

    def get(self, mid: str) -> Tenant:
        """Return a tenant, or 404."""
        with self._read() as uow:
            tenant = uow.tenants.get(mid)
        if tenant is None:
            raise NotFoundError(f"tenant {mid!r} not found")
        return tenant

    def issue_key(self, mid: str) -> NewKey:
        """Issue another key for a tenant; the key is in the answer only."""
        with self._uow() as uow:
            if uow.tenants.get(mid) is None:
                raise NotFoundError(f"tenant {mid!r} not found")
            key, secret = self._new_key(mid)
            uow.tenants.add_key(key, hash_key(secret))
            uow.commit()
        return NewKey(key, secret)

    def list_keys(self, mid: str) -> list[ApiKey]:
        """List a tenant's keys (never the keys themselves)."""
        with self._read() as uow:
            if uow.tenants.get(mid) is None:
                raise NotFoundError(f"tenant {mid!r} not found")
            return uow.tenants.list_keys(mid)

    def revoke_key(self, mid: str, key_id: str) -> float | None:
        """Revoke a key; requests with it answer 401 from now on. Revoking it again changes
        nothing: the answer is when it was revoked before (None: revoked by this call)."""
        with self._uow() as uow:
            key = uow.tenants.get_key(mid, key_id)
            if key is None:
                raise NotFoundError(f"key {key_id!r} of tenant {mid!r} not found")
            if key.revoked_at is None:
                uow.tenants.revoke_key(mid, key_id, self._clock())
            uow.commit()
        self._auth_cache.clear()
        return key.revoked_at

    def cached(self, api_key: str | None) -> str | None:
        """The tenant (`mid`) of a key read in the last `AUTH_CACHE_SECONDS`, without any
        I/O; None when it must be read (`authenticate`). No key at all is a 401."""
        if not api_key:
            raise UnauthorizedError("missing API key: send Authorization: Bearer <key>")
        cached = self._auth_cache.get(hash_key(api_key))
        return cached[0] if cached is not None and cached[1] > self._clock() else None

    def authenticate(self, api_key: str | None) -> str:
        """Return the tenant (`mid`) of a valid, unrevoked key, else raise 401."""
        mid = self.cached(api_key)
        if mid is not None:
            return mid
        assert api_key  # `cached` refused a missing one
        digest = hash_key(api_key)
        now = self._clock()
        with self._read() as uow:
            key = uow.tenants.key_by_hash(digest)
        if key is None or key.revoked_at is not None:
            raise UnauthorizedError("unknown or revoked API key")
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[digest] = (key.mid, now + AUTH_CACHE_SECONDS)
        return key.mid

    def catalog(self, mid: str) -> Catalog:
        """Return the tenant's whole catalog."""
        return self.get(mid).catalog

    def catalog_entry(self, mid: str, kind: str, key: str) -> Catalog:
        """Return the catalog that has entry `key` of `kind` (404 when there is none)."""
        catalog = self.get(mid).catalog
        catalog.require(kind)
        if find_entry(catalog, kind, key) is None:
            raise NotFoundError(f"no {kind} entry {key!r} in the catalog")
        return catalog

    def put_catalog_entry(self, mid: str, kind: str, key: str, body: Mapping[str, Any]) -> Catalog:
        """Create or replace one catalog entry; answer the catalog that now has it."""
        with self._uow() as uow:
            tenant = uow.tenants.get(mid, for_update=True)
            if tenant is None:
                raise NotFoundError(f"tenant {mid!r} not found")
            with _located("path"):  # the domain names the entry's key `key`
                catalog = upsert_entry(tenant.catalog, kind, key, body)
            check_catalog_size(catalog)
            uow.tenants.save_catalog(mid, catalog)
            uow.commit()
        return catalog


@contextmanager
def _located(part: str) -> Iterator[None]:
    """Prefix the `loc` of validation errors that name a bare key with the request part."""
    try:
        yield
    except ValidationError as exc:
        errors = [FieldProblem((part, *p.loc), p.msg) if len(p.loc) == 1 else p for p in exc.errors]
        if errors == exc.errors:
            raise
        first = errors[0]
        raise ValidationError(
            f"{'.'.join(str(x) for x in first.loc)}: {first.msg}", errors
        ) from exc
