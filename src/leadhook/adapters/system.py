"""The real clock and id factory (the domain and services take them as ports)."""

from __future__ import annotations

import os
import threading
import time

from leadhook.domain.signing import generate_secret
from leadhook.services.cursor import CROCKFORD


class SystemClock:
    """Unix time from the system clock."""

    def __call__(self) -> float:
        return time.time()


# shortuuid's alphabet (57 characters, no 0/1/I/O/l) and its 22-character length: the ids
# every earlier version minted, so old and new ones look alike.
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_PAIRS = tuple(a + b for a in ALPHABET for b in ALPHABET)  # two digits per division
_BASE2 = len(ALPHABET) ** 2
_RAND_B = (1 << 62) - 1  # the 62 random bits below the variant
_UUID7_BITS = (7 << 76) | (2 << 62)  # version 7, RFC 9562 variant


def shortuuid_of(number: int) -> str:
    """Encode a 128-bit number as shortuuid does: 22 base-57 digits, most significant first.

    Byte for byte what `shortuuid.encode(UUID(int=number))` answers (a test checks it), with
    half the divisions and none of its string building: ids are minted on every behaviour.
    """
    pairs = []
    for _ in range(11):
        number, pair = divmod(number, _BASE2)
        pairs.append(_PAIRS[pair])
    pairs.reverse()
    return "".join(pairs)


def new_uuid7(at: float) -> int:
    """A version-7 UUID (RFC 9562) for unix time `at`, as its 128-bit number: the millisecond
    in the top 48 bits, then the version, 12 random bits, the variant and 62 random bits.

    Time first, so the ids minted later sort later (as text too: shortuuid writes the most
    significant digit first, in an alphabet in ASCII order). A new lead's or delivery's id
    then lands at the end of every index keyed by it, one page, where a random id (version
    4) lands on any page of the index: a batch of 500 leads wrote hundreds of pages of each
    such index to the WAL (docs/write-path.md, "Ids in time order"). 74 random bits are
    left: ids stay unguessable, and two ids of one millisecond collide with odds of 2⁻⁷⁴.
    """
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 62 for rand_b, the next 12 rand_a
    rand_a = ((rand >> 62) & 0xFFF) << 64
    return (int(at * 1000) << 80) | _UUID7_BITS | rand_a | (rand & _RAND_B)


# A ULID's text: Crockford's base32 of its 128 bits, 26 characters (the top two bits are 0);
# the alphabet is the one event ids are read back with (`services.cursor`).
_CROCKFORD_PAIRS = tuple(a + b for a in CROCKFORD for b in CROCKFORD)  # ten bits per lookup


def ulid_of(number: int) -> str:
    """The 26-character text of the ULID `number` (what `str(ULID.from_int(number))` is)."""
    pairs = _CROCKFORD_PAIRS
    return "".join([pairs[(number >> shift) & 1023] for shift in range(120, -1, -10)])


def new_ulid(at: float) -> int:
    """A ULID for unix time `at`: its millisecond in the top 48 bits, 80 random bits below."""
    return (int(at * 1000) << 80) | int.from_bytes(os.urandom(10), "big")


class SystemIds:
    """Shortuuids of version-7 UUIDs for objects (time first); ULIDs for events, strictly
    increasing within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def short(self) -> str:
        return shortuuid_of(new_uuid7(time.time()))

    def event_id(self, at: float) -> str:
        candidate = new_ulid(at)
        with self._lock:
            # Same millisecond (or a clock step back): keep order by incrementing the last id.
            if candidate <= self._last:
                candidate = self._last + 1
            self._last = candidate
        return ulid_of(candidate)

    def secret(self) -> str:
        return generate_secret(os.urandom(32))
