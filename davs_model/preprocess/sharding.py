"""Clip -> shard by a stable hash (pure Python, no numpy).

``shard_of`` depends only on the clip id and the number of shards: not on PYTHONHASHSEED, the
process, the platform or the order of the clips, so a clip always lands in the same shard file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _check_n(n_shards: int) -> int:
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards must be an int >= 1, got {n_shards!r}")
    return n_shards


def shard_of(clip_id: str, n_shards: int) -> int:
    """int.from_bytes(blake2b(utf-8 bytes, surrogateescape).digest()[:8], "big") % n_shards.

    (The default 64-byte BLAKE2b digest; its first 8 bytes, big-endian.)
    """
    _check_n(n_shards)
    data = clip_id.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(data).digest()[:8], "big") % n_shards


def assign_shards(clip_ids: Iterable[str], n_shards: int) -> dict[int, list[str]]:
    """{shard: sorted clip ids} for every shard 0..n_shards-1 (empty shards included).

    Every id lands in exactly one shard; a repeated id is an error (two clips would write the
    same record).
    """
    _check_n(n_shards)
    shards: dict[int, list[str]] = {i: [] for i in range(n_shards)}
    seen: set[str] = set()
    for cid in clip_ids:
        if cid in seen:
            raise ValueError(f"clip id {cid!r} appears twice; clip ids must be unique")
        seen.add(cid)
        shards[shard_of(cid, n_shards)].append(cid)
    for ids in shards.values():
        ids.sort()
    return shards


def shard_name(i: int) -> str:
    """Zero-padded shard name: 0 -> "000" (at least 3 digits)."""
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
        raise ValueError(f"shard index must be an int >= 0, got {i!r}")
    return f"{i:03d}"
