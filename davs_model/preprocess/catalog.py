"""The catalog: every clip of every configured source, known before anything runs.

Used while Snakemake builds the DAG (so it must stay fast and import nothing heavy), and by the CLI.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from davs_model.config import DemoSection, SourceConfig
from davs_model.preprocess.sharding import shard_of
from davs_model.preprocess.sources import (
    Clip,
    discover_folder,
    discover_lrw,
    discover_manifest,
    discover_voxceleb,
)

log = logging.getLogger(__name__)


def demo_clips(name: str, demo: DemoSection) -> list[Clip]:
    """The demo dataset's clips, computed from its config alone (the files are made by a rule)."""
    from davs_model.demo.dataset import clip_spec, demo_clip_paths

    root = Path(demo.root)
    words = sorted(demo.words)
    cfg = demo.dataset_config()
    clips = []
    for path in demo_clip_paths(cfg, root):
        word, split = path.parent.parent.name, path.parent.name
        spec = clip_spec(cfg, word, split, int(path.stem.rsplit("_", 1)[1]))
        rel = path.relative_to(root).with_suffix("").as_posix()
        clips.append(
            Clip(
                clip_id=f"{name}/{rel}",
                path=str(path),
                source=name,
                kind="demo",
                split=split,
                label=words.index(word),
                word=word,
                speaker=f"demo_{spec.voice}",
            )
        )
    return clips


def discover_source(name: str, src: SourceConfig, demo: DemoSection) -> list[Clip]:
    """All clips of one source."""
    if src.kind == "demo":
        return demo_clips(name, demo)
    if src.kind == "lrw":
        return discover_lrw(name, src.root, splits=src.splits, word_list=src.word_list)
    if src.kind in ("voxceleb1", "voxceleb2"):
        return discover_voxceleb(name, src.root, kind=src.kind, split_map=src.split_map, boxes_root=src.boxes_root)
    if src.kind == "folder":
        return discover_folder(name, src.root, split=src.split)
    if src.kind == "manifest":
        return discover_manifest(name, src.path)
    raise ValueError(f"unknown source kind {src.kind!r} for source {name!r}")


def discover_all(sources: dict[str, SourceConfig], demo: DemoSection) -> list[Clip]:
    """Clips of all sources; a missing source folder is an error that names it and the fix."""
    clips: list[Clip] = []
    for name, src in sources.items():
        location = src.root or src.path
        if src.kind != "demo" and location and not Path(location).exists():
            raise FileNotFoundError(
                f"source {name!r}: {location} does not exist. Fix `sources.{name}` in config.yaml "
                "(paths are relative to the folder you run snakemake from)."
            )
        found = discover_source(name, src, demo)
        if not found:
            log.warning("source %r (%s at %s) has no clips", name, src.kind, location)
        clips.extend(found)
    counts = Counter(c.clip_id for c in clips)
    if len(counts) != len(clips):
        dup = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise ValueError(f"duplicate clip ids {dup}: give the sources distinct names")
    return clips


def plan_shards(clips: list[Clip], shards: dict[str, int]) -> dict[tuple[str, str], list[Clip]]:
    """(split, shard name) → clips, for every shard of every split that has clips (empty shards included)."""
    plan: dict[tuple[str, str], list[Clip]] = {}
    for split in sorted({c.split for c in clips}):
        n = shards[split]
        for i in range(n):
            plan[(split, f"{i:03d}")] = []
    for clip in clips:
        plan[(clip.split, f"{shard_of(clip.clip_id, shards[clip.split]):03d}")].append(clip)
    return plan


def files_fingerprint(clips: Iterable[Clip]) -> str:
    """BLAKE2b (hex) of every clip's video and box file: path, size and mtime (ns), in the given order.

    Stands in for declaring the files as Snakemake inputs (cheaper at LRW scale): any change, touch, removal or
    restoration of a file changes the digest. A missing file is hashed as missing, never an error here.
    """
    digest = hashlib.blake2b(digest_size=16)
    for clip in clips:
        for path in (clip.path, clip.boxes_path):
            if not path:
                continue
            try:
                st = os.stat(path)
                entry = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n"
            except OSError:
                entry = f"{path}\0missing\n"
            digest.update(entry.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
