from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from davs_model.preprocess.sharding import assign_shards, shard_name, shard_of

# computed once (blake2b, first 8 bytes big-endian); must never change: shards on disk rely on it
EXPECTED = {
    ("lrw/ABOUT/train/ABOUT_00001", 16): 14,
    ("lrw/ABOUT/train/ABOUT_00001", 1000): 486,
    ("vox2/dev/mp4/id00012/21Uxsk56VDQ/00001", 16): 10,
    ("vox2/dev/mp4/id00012/21Uxsk56VDQ/00001", 1000): 970,
    ("", 16): 3,
    ("", 1000): 99,
    ("caf\udce9", 16): 0,  # surrogate-escaped non-UTF-8 byte
    ("caf\udce9", 1000): 120,
}
IDS = [f"lrw/W{w:03d}/train/W{w:03d}_{i:05d}" for w in range(20) for i in range(500)]  # 10k


def test_hard_coded_values():
    assert {key: shard_of(*key) for key in EXPECTED} == EXPECTED
    assert shard_of("lrw/ABOUT/train/ABOUT_00001", 2**64) == 2115534010837511486


def test_stable_across_processes_and_hash_seeds():
    ids = IDS[::97] + list({k for k, _ in EXPECTED})
    here = {cid: shard_of(cid, 37) for cid in ids}
    code = (
        "import json, sys\n"
        "from davs_model.preprocess.sharding import shard_of\n"
        "ids = json.loads(sys.stdin.read())\n"
        "print(json.dumps({c: shard_of(c, 37) for c in ids}))\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(ids),
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert json.loads(out.stdout) == here


def test_assign_every_id_once_sorted_and_order_independent():
    shards = assign_shards(IDS, 8)
    assert sorted(shards) == list(range(8))
    flat = [c for ids in shards.values() for c in ids]
    assert sorted(flat) == sorted(IDS) and len(flat) == len(IDS)
    assert all(ids == sorted(ids) for ids in shards.values())
    assert all(shard_of(c, 8) == s for s, ids in shards.items() for c in ids)
    shuffled = IDS[:]
    random.Random(1).shuffle(shuffled)
    assert assign_shards(shuffled, 8) == shards
    assert assign_shards(iter(reversed(IDS)), 8) == shards  # any iterable


def test_roughly_balanced():
    n = 16
    sizes = [len(v) for v in assign_shards(IDS, n).values()]
    mean = len(IDS) / n
    # binomial sd ~ 24 for 625 per shard: +-20 % is > 5 sd
    assert all(0.8 * mean < s < 1.2 * mean for s in sizes), sizes


def test_empty_shards_included_and_single_shard():
    assert assign_shards(["a"], 4) == {i: (["a"] if i == shard_of("a", 4) else []) for i in range(4)}
    assert assign_shards(IDS[:10], 1) == {0: sorted(IDS[:10])}
    assert assign_shards([], 3) == {0: [], 1: [], 2: []}


def test_errors():
    with pytest.raises(ValueError, match="twice"):
        assign_shards(["a", "b", "a"], 2)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError):
            shard_of("a", bad)
    with pytest.raises(ValueError):
        shard_name(-1)


def test_shard_name():
    assert shard_name(0) == "000"
    assert shard_name(7) == "007"
    assert shard_name(123) == "123"
    assert shard_name(1234) == "1234"


def test_no_numpy_import():
    code = "import sys, davs_model.preprocess.sharding; print('numpy' in sys.modules)"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
