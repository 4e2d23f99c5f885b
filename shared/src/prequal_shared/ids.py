"""Identifiers: time-ordered, so that the rows they key are written where the indexes end.

Random (version 4) keys put every insert on a random leaf of each index they are in. After
each checkpoint, PostgreSQL logs the first change to a page as the whole 8 kB page, so at 1,000
applications/s three quarters of the WAL were such page images: 11.8 kB per application, against
2.8 to 3.2 kB with these ids (`make bench`, measured with pg_stat_wal and pg_waldump).

`new_id` is a UUID version 7 (RFC 9562): 48 bits of Unix time in milliseconds, then 74 random
bits. Application ids are handed to clients and are all a client needs to read a status, so
the random part stays whole: the counter-based version 7 of Python 3.14 and uuid-utils makes ids
from one millisecond consecutive, leaving 32 bits to guess from a neighbour's id.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VERSION_8 = 0x8 << 76
_VARIANT_RFC = 0b10 << 62
_TIME = ((1 << 48) - 1) << 80
_RANDOM = (0xFFF << 64) | ((1 << 62) - 1)  # rand_a and rand_b: the 74 bits left


def new_id() -> uuid.UUID:
    """A fresh UUID version 7: ordered by its millisecond of creation, otherwise random."""
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=(millis << 80) | _VERSION_7 | _VARIANT_RFC | (random & _RANDOM))


def derived_id(source: uuid.UUID, namespace: uuid.UUID) -> uuid.UUID:
    """The same id for the same (source, namespace), ordered like its source.

    A UUID version 8: the source's first 48 bits (its time, for a version 7 source), then 74
    bits of the name-based (version 5, SHA-1) id of the source in the namespace."""
    hashed = uuid.uuid5(namespace, str(source)).int
    return uuid.UUID(int=(source.int & _TIME) | _VERSION_8 | _VARIANT_RFC | (hashed & _RANDOM))
