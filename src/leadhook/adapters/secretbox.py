"""Webhook secrets at rest: encrypted with Fernet keys from the environment or a key file.

A stored secret is ``fernet:`` + a Fernet token (AES-128-CBC + HMAC-SHA256, `cryptography`).
`LEADHOOK_SECRET_KEY` is a comma-separated list of Fernet keys: the first encrypts, every one
decrypts, so a key is rotated by putting a new one first (start-up re-encrypts every stored
secret under it) and dropping the old one once that has run everywhere.

Without the variable, the key lives in a file created on first start (mode 0600): beside a
SQLite database (``leadhook.db.key``), or ``./leadhook.key`` for PostgreSQL. A check value
encrypted with the key is kept in the database, so a process started with another key refuses
to start instead of writing secrets nobody else can read. Nothing here ever logs a key.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from leadhook.domain.errors import SecretKeyUnavailableError

log = logging.getLogger("leadhook.secrets")

PREFIX = "fernet:"
"""Marks an encrypted value; anything else in a secret column is a plaintext row to encrypt."""
KEY_FILE_NAME = "leadhook.key"
_CACHE_LIMIT = 16_384


class SecretKeyError(SecretKeyUnavailableError):
    """The configured keys are malformed, or do not decrypt what the database holds.

    Its message (`str`) names the key's source for the operator (the command line, the log);
    a request that meets it is answered 503 with `detail`, which names no path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.detail = (
            "this service's secret keys do not open the stored webhook secrets: an operator"
            " must start it with the keys they were written with"
        )


def parse_keys(value: str, source: str = "LEADHOOK_SECRET_KEY") -> tuple[str, ...]:
    """Split a comma- (or newline-) separated list of Fernet keys and check each one.

    The message of a bad key names its position, never its value.
    """
    keys = tuple(k.strip() for k in value.replace("\n", ",").split(",") if k.strip())
    if not keys:
        raise SecretKeyError(f"{source} holds no key")
    for i, key in enumerate(keys, 1):
        try:
            Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise SecretKeyError(
                f"key {i} of {source} is not a Fernet key (32 url-safe base64-encoded bytes;"
                " make one with `leadhook secret-key`)"
            ) from None
    return keys


def generate_key() -> str:
    """Return a new Fernet key (44 characters of url-safe base64)."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Encrypt and decrypt webhook secrets; decryption is cached, the claim path is hot."""

    def __init__(self, keys: Sequence[str], source: str = "LEADHOOK_SECRET_KEY") -> None:
        if not keys:
            raise SecretKeyError("no secret key")
        self.source = source
        self._primary = Fernet(keys[0].encode("ascii"))
        self._all = MultiFernet([Fernet(k.encode("ascii")) for k in keys])
        self._plain: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretBox(source={self.source!r})"  # never the keys

    def encrypt(self, plaintext: str) -> str:
        """Return the stored form of `plaintext`, encrypted under the first key."""
        return PREFIX + self._primary.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """Return the plaintext of a stored value; a plaintext row (not yet encrypted) as is."""
        if not stored.startswith(PREFIX):
            return stored
        cached = self._plain.get(stored)
        if cached is not None:
            return cached
        try:
            plain = self._all.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SecretKeyError(
                f"a stored webhook secret does not decrypt with the keys of {self.source}:"
                " it was encrypted with another key (see docs/operations.md, Secret keys)"
            ) from None
        with self._lock:
            if len(self._plain) >= _CACHE_LIMIT:
                self._plain.clear()
            self._plain[stored] = plain
        return plain

    def encrypt_optional(self, plaintext: str | None) -> str | None:
        """`encrypt`, passing None through."""
        return None if plaintext is None else self.encrypt(plaintext)

    def decrypt_optional(self, stored: str | None) -> str | None:
        """`decrypt`, passing None through."""
        return None if stored is None else self.decrypt(stored)

    def is_current(self, stored: str) -> bool:
        """Tell whether `stored` is encrypted under the first key (nothing to re-encrypt)."""
        if not stored.startswith(PREFIX):
            return False
        try:
            self._primary.decrypt(stored[len(PREFIX) :].encode("ascii"))
        except InvalidToken:
            return False
        return True

    def reencrypt(self, stored: str) -> str:
        """Return `stored` encrypted under the first key (plaintext rows included)."""
        return self.encrypt(self.decrypt(stored))


# ---- which box an engine uses -----------------------------------------------------------

_boxes: weakref.WeakKeyDictionary[Engine, SecretBox] = weakref.WeakKeyDictionary()
_boxes_lock = threading.Lock()


def attach(engine: Engine, box: SecretBox) -> None:
    """Make `box` the one the repositories and the queue on `engine` use."""
    with _boxes_lock:
        _boxes[engine] = box


def box_for(engine: Engine) -> SecretBox:
    """Return the box attached to `engine`, or the default one for its database URL."""
    box = _boxes.get(engine)
    if box is None:
        with _boxes_lock:
            box = _boxes.get(engine)
            if box is None:
                box = load_box((), engine.url.render_as_string(hide_password=False))
                _boxes[engine] = box
    return box


# ---- where the keys come from -----------------------------------------------------------


def default_key_file(database_url: str) -> Path | None:
    """Return the key file used without `LEADHOOK_SECRET_KEY` (None: an in-memory database)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        db = Path(url.database).expanduser()
        return db.with_name(db.name + ".key")
    return Path.cwd() / KEY_FILE_NAME


def load_box(keys: Sequence[str], database_url: str) -> SecretBox:
    """Return the box of the configured keys, else of the default key file (made if absent)."""
    if keys:
        return SecretBox(keys)
    path = default_key_file(database_url)
    if path is None:
        # An in-memory database lives and dies with this process: so may its key.
        return SecretBox([generate_key()], source="a key of this process")
    return SecretBox(read_or_create_key_file(path), source=f"the key file {path}")


def read_or_create_key_file(path: Path) -> tuple[str, ...]:
    """Read the keys of `path`, creating it (mode 0600, one new key) when it does not exist."""
    if not path.exists():
        try:
            _create_key_file(path)
        except OSError as exc:
            raise SecretKeyError(
                f"cannot create the key file {path} ({exc.strerror or exc}):"
                " set LEADHOOK_SECRET_KEY (make a key with `leadhook secret-key`)"
            ) from None
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"cannot read the key file {path}: {exc}") from None
    if mode & 0o077:
        log.warning("the key file %s is readable by other users: chmod 600 it", path)
    return parse_keys(text, source=f"the key file {path}")


def _create_key_file(path: Path) -> None:
    # Written under a temporary name, then linked into place: a process starting at the same
    # moment either sees no file or the whole key, and only one key ever wins.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(generate_key() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        log.warning(
            "LEADHOOK_SECRET_KEY is not set: webhook secrets are encrypted with the key in the"
            " new file %s; keep it (and back it up apart from the database)",
            path,
        )
    finally:
        tmp.unlink(missing_ok=True)
