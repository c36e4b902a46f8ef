"""Redact secrets from text bound for a log line: webhook secrets and tenant API keys.

The last line of defence: no code logs a secret on purpose, and the database engine hides
statement parameters, but a driver's error text can still quote a value it was given.
"""

from __future__ import annotations

import re

from leadhook.domain.signing import SECRET_PREFIX
from leadhook.services.tenants import KEY_PREFIX

REDACTED = "[redacted]"

_SECRETS = re.compile(
    rf"{re.escape(SECRET_PREFIX)}[A-Za-z0-9+/=_-]*|\b{re.escape(KEY_PREFIX)}[A-Za-z0-9_-]{{16,}}"
)


def redact(text: str) -> str:
    """Replace every webhook secret (`whsec_…`) and API key (`lh_…`) in `text`."""
    if SECRET_PREFIX not in text and KEY_PREFIX not in text:
        return text  # the common case, without running the pattern
    return _SECRETS.sub(REDACTED, text)
