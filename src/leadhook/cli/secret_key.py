"""`leadhook secret-key`: a new key to encrypt webhook secrets at rest with."""

from __future__ import annotations

from leadhook.cli.common import console


def secret_key() -> None:
    """Print a new key for LEADHOOK_SECRET_KEY (to rotate: new key first, a comma, the old)."""
    from leadhook.adapters.secretbox import generate_key

    console.print(generate_key())
