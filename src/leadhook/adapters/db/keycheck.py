"""At start-up: prove the secret key is this database's, and re-encrypt under the first key."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, delete, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError

from leadhook.adapters.db import tables as t
from leadhook.adapters.secretbox import SecretBox, SecretKeyError

CHECK_PLAINTEXT = "leadhook secret key check"


def prepare_secrets(engine: Engine, box: SecretBox, *, rewrite: bool = True) -> int:
    """Check the key against the database and bring every stored secret under the first key.

    Raises SecretKeyError when the database's secrets were encrypted with keys `box` does not
    hold. Returns how many subscriptions were (re-)encrypted: plaintext rows written by an
    older version, and rows under a key that is no longer first (a key rotation). Without
    `rewrite` (a command-line job, not a service starting) it only checks: a listing run
    with the keys in another order must not re-encrypt what running services read.
    """
    _check(engine, box, rewrite=rewrite)
    return _sweep(engine, box) if rewrite else 0


def holds_secrets(engine: Engine) -> bool:
    """Tell whether the database already has secrets under some key (its check row exists).

    Asked before a missing key file is created: a database copied without its key file must
    be refused with that said, not given a new key that cannot decrypt it.
    """
    with engine.connect() as raw:
        conn = raw.execution_options(leadhook_readonly=True)  # a read: no write lock on SQLite
        if not inspect(conn).has_table(t.key_check.name):  # a new database
            return False
        row = conn.execute(select(t.key_check.c.id).where(t.key_check.c.id == 1)).first()
    return row is not None


def key_opens(engine: Engine, box: SecretBox) -> bool:
    """Tell whether `box` opens the database's check value (a read; nothing written)."""
    with engine.connect() as raw:
        conn = raw.execution_options(leadhook_readonly=True)
        token = conn.execute(select(t.key_check.c.token).where(t.key_check.c.id == 1)).scalar()
    return _opens(box, token)


def _opens(box: SecretBox, token: str | None) -> bool:
    """Tell whether `box` decrypts the check value `token` to what it should say."""
    try:
        return token is not None and box.decrypt(token) == CHECK_PLAINTEXT
    except SecretKeyError:
        return False


def forget_key(engine: Engine, new_secret: Callable[[], str]) -> list[tuple[str, str]]:
    """Forget a lost key: drop its check value and give every subscription a new secret,
    stored as plaintext (the next start encrypts it under the key it runs with), in one
    transaction. Return (tenant, id) of every subscription not deleted."""
    s = t.subscriptions.c
    with engine.begin() as conn:
        rows = conn.execute(select(s.id, s.mid, s.deleted_at).order_by(s.mid, s.id)).all()
        conn.execute(delete(t.key_check))
        for sub_id, _mid, _deleted in rows:
            conn.execute(
                update(t.subscriptions)
                .where(s.id == sub_id)
                .values(secret=new_secret(), previous_secret=None, previous_secret_expires_at=None)
            )
    return [(mid, sub_id) for sub_id, mid, deleted in rows if deleted is None]


def _check(engine: Engine, box: SecretBox, *, rewrite: bool) -> None:
    c = t.key_check.c
    with engine.connect() as raw:  # a read: on SQLite no write lock (a listing must not wait)
        token = (
            raw.execution_options(leadhook_readonly=True)
            .execute(select(c.token).where(c.id == 1))
            .scalar()
        )
    if token is None:
        try:
            with engine.begin() as conn:
                conn.execute(insert(t.key_check).values(id=1, token=box.encrypt(CHECK_PLAINTEXT)))
            return
        except IntegrityError:  # another process started at the same moment: check its row
            with engine.begin() as conn:
                token = conn.execute(select(c.token).where(c.id == 1)).scalar()
    if not _opens(box, token):
        raise SecretKeyError(
            f"{box.source} is not the key this database's webhook secrets were encrypted with:"
            " start leadhook with the key used before (LEADHOOK_SECRET_KEY, or the key file"
            " created on the first start); to rotate keys, list the new key first and the old"
            " one after it"
        )
    if rewrite and token is not None and not box.is_current(token):
        with engine.begin() as conn:
            conn.execute(
                update(t.key_check)
                .where(c.id == 1, c.token == token)
                .values(token=box.encrypt(CHECK_PLAINTEXT))
            )


def _sweep(engine: Engine, box: SecretBox) -> int:
    s = t.subscriptions.c
    with engine.begin() as conn:
        rows = conn.execute(select(s.id, s.secret, s.previous_secret)).all()
    changed = 0
    for sub_id, secret, previous in rows:
        stale = [v for v in (secret, previous) if v is not None and not box.is_current(v)]
        if not stale:
            continue
        # Compare-and-set: a rotation of the subscription meanwhile wins over this rewrite.
        with engine.begin() as conn:
            conn.execute(
                update(t.subscriptions)
                .where(s.id == sub_id, s.secret == secret)
                .values(secret=box.reencrypt(secret), previous_secret=_again(box, previous))
            )
        changed += 1
    return changed


def _again(box: SecretBox, stored: str | None) -> str | None:
    return None if stored is None else box.reencrypt(stored)
