"""Mutations of real model files, and the one property every mutated file must have."""
from __future__ import annotations

import random
import struct

from mnnlite import FormatError, dumps, loads
from mnnlite.info import describe


def check_one(data: bytes, source: str = "<fuzz>", round_trip: bool = True) -> str:
    """Load, describe and (optionally) re-write ``data``: it must work or raise FormatError, nothing else."""
    try:
        model = loads(data, source, weight_path="/nonexistent/fuzz.weight")
        describe(model)
        again = loads(dumps(model), source) if round_trip else model
    except FormatError:
        return "rejected"
    if again != model:
        raise AssertionError("a loadable file did not survive a write/read round trip")
    return "loaded"


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random corruption of the kinds a damaged or hostile file has."""
    buf = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del buf[rng.randrange(len(buf)):]
    elif kind == 2:  # an aligned word becomes a hostile number (offsets, lengths, vtable refs)
        pos = rng.randrange(0, max(len(buf) - 4, 1)) & ~3
        value = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, len(buf), len(buf) - 4,
                            rng.randrange(1 << 32)])
        buf[pos:pos + 4] = struct.pack("<I", value)
    elif kind == 3:  # a 16-bit vtable entry
        pos = rng.randrange(0, max(len(buf) - 2, 1)) & ~1
        buf[pos:pos + 2] = struct.pack("<H", rng.choice([0, 2, 4, 0xFFFF, rng.randrange(1 << 16)]))
    elif kind == 4:  # splice a block from elsewhere
        n = rng.randint(1, 64)
        src, dst = rng.randrange(len(buf)), rng.randrange(len(buf))
        buf[dst:dst + n] = buf[src:src + n]
    elif kind == 5:  # insert junk
        pos = rng.randrange(len(buf))
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:  # small random file
        buf = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    return bytes(buf)
