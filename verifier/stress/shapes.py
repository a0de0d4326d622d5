"""The shapes of a client group's traffic, drawn ahead of time: which key, which command,
how big a value, which TTL.

Draws are pre-computed into a schedule per client (no random draws on the hot path, as
the churn flood does); a schedule of ``SCHEDULE_LEN`` picks repeats, which keeps hot keys
hot. Zipf popularity uses cumulative weights over the key space (8 bytes per key: 8 MB
for a million keys, built once per process).
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from verifier.stress.workload_file import Group, Popularity, Values

SCHEDULE_LEN = 4096


@dataclass(frozen=True, slots=True)
class Pick:
    command: str
    key: int  # index in the group's key space
    size: int  # value size (or the index of a number, for counters)
    ttl: int
    arg: str


def _key_sampler(group: Group, rng: random.Random) -> list[int]:
    count = group.keys.count
    if group.keys.popularity == Popularity.UNIFORM or count == 1:
        return [rng.randrange(count) for _ in range(SCHEDULE_LEN * 2)]
    weights = [1.0 / (rank**group.keys.zipf_s) for rank in range(1, count + 1)]
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]
    # rank r is key (r * a prime) mod count: hot keys spread over the hash table
    stride = 1_000_003 if count % 1_000_003 else 999_983
    return [
        (bisect.bisect_left(cumulative, rng.random() * total) * stride) % count
        for _ in range(SCHEDULE_LEN * 2)
    ]


def _size(values: Values, rng: random.Random) -> int:
    if values.numbers:
        return rng.randrange(len(values.numbers))
    if values.weighted:
        sizes = [s for s, _ in values.weighted]
        return rng.choices(sizes, weights=[w for _, w in values.weighted])[0]
    if values.pareto is not None:
        scale, shape = values.pareto
        # generalised Pareto with location 0: scale * ((1-u)^-shape - 1) / shape
        u = rng.random()
        drawn = int(scale * ((1.0 - u) ** -shape - 1.0) / shape)
        return max(values.min or 1, min(drawn, values.max or drawn))
    if values.min is not None and values.max is not None:
        return rng.randint(values.min, values.max)
    return values.size


def schedule(group: Group, rng: random.Random) -> list[Pick]:
    """``SCHEDULE_LEN`` picks for one client of ``group``."""
    commands = [c for c, _ in group.commands] or ["watch"]
    weights = [w for _, w in group.commands] or [1.0]
    keys = _key_sampler(group, rng)
    low, high = group.ttl
    picks = rng.choices(commands, weights=weights, k=SCHEDULE_LEN)
    return [
        Pick(
            command=command,
            key=keys[i],
            size=_size(group.values, rng),
            ttl=rng.randint(low, high) if high else 0,
            arg=rng.choice(group.arg_choices(command)),
        )
        for i, command in enumerate(picks)
    ]


def extra_keys(group: Group, rng: random.Random, first: int) -> list[int]:
    """The keys of a multi-get beginning at ``first``: ``mget_keys`` of them, distinct
    (or one key repeated, with ``mget_repeat``: refcounts pile onto one item)."""
    if group.mget_repeat:
        return [first] * group.mget_keys
    count = group.keys.count
    return [first] + [rng.randrange(count) for _ in range(group.mget_keys - 1)]
