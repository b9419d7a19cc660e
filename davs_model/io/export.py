"""Per-split index of the shards, and export of the shards to the original DAVS folder layout.

The export lets the original code read our preprocessing (``Dataloader/Data_load_sequence.py``)::

    out_root/{split}/{label}/{vid}/align_face256/{t}.jpg     t = 0..T-1, 260x260 JPEG (BGR on disk)
    out_root/{split}/{label}/{vid}/mfcc20/{l}.bin            240 little-endian float64 per bin l
    out_root/{split}/{label}/video_look_up_table.csv         rows: vid, clip id (no header)

``vid`` numbers the clips of one class 0..N-1 in the byte order of their clip ids (the original
sorts file names). Unlabelled clips (label -1) go to ``{split}/unlabelled``, which the original
loader ignores. Each clip folder gets a marker file ``.davs_clip_id`` (the original loader only
looks at sub-folders), so that a re-export can tell its own clip folders from anybody else's.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from davs_model import SHARD_FORMAT_VERSION
from davs_model.io.shards import (
    ALIGN_FACE,
    BIN_NUMBERS,
    MFCC,
    ShardError,
    ShardReader,
    encode_str,
)

__all__ = ["export_original_layout", "write_index"]

LOOKUP_TABLE = "video_look_up_table.csv"
CLIP_MARKER = ".davs_clip_id"
UNLABELLED = "unlabelled"
EXPORT_JPEG_QUALITY = 95  # raw shards: frames are JPEG-encoded like the original's cv2.imwrite


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``<name>.tmp-<pid>`` and a rename; never half a file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _open_shards(shard_paths: Iterable, what: str) -> list[ShardReader]:
    readers = [ShardReader(p) for p in shard_paths]
    for r in readers:
        if not r.path.is_file():
            raise ShardError(f"{r.path}: shard listed for {what} does not exist; run the shards first")
    return readers


def write_index(shard_paths: Iterable, out_json, split: str) -> dict:
    """Write the per-split ``index.json`` (atomically) and return its content.

    Content: format_version, split, n_clips, n_frames (total), ``shards`` (path relative to the
    index file's folder, shard number, n_clips) and ``clips``: clip id -> shard (position in
    ``shards``), index (in the shard), n_frames, n_bins, label, speaker.
    """
    out = Path(out_json)
    readers = _open_shards(shard_paths, f"index {out}")
    shards, clips, n_frames = [], {}, 0
    try:
        for s, r in enumerate(readers):
            if r.attr("split") != split:
                raise ShardError(f"{r.path}: shard of split {r.attr('split')!r}, not {split!r}")
            for i, clip_id in enumerate(r.clip_ids):
                if clip_id in clips:
                    other = readers[clips[clip_id]["shard"]].path
                    raise ShardError(f"{r.path}: clip {clip_id!r} is also in {other}")
                m = r.meta(i, ("n_frames", "n_bins", "label", "speaker"))
                clips[clip_id] = {"shard": s, "index": i, **m}
                n_frames += m["n_frames"]
            rel = Path(os.path.relpath(r.path, out.parent)).as_posix()
            shards.append({"path": rel, "shard": r.attr("shard"), "n_clips": len(r)})
    finally:
        for r in readers:
            r.close()
    doc = {"format_version": SHARD_FORMAT_VERSION, "split": split, "n_clips": len(clips),
           "n_frames": n_frames, "shards": shards, "clips": clips}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    # ensure_ascii: clip ids with surrogate escapes (undecodable file names) survive as \udcXX
    atomic_write(out, json.dumps(doc, indent=1).encode("ascii"))
    return doc


def _read_table(path: Path) -> dict[int, str]:
    if not path.exists():
        return {}
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
        return {int(row[0]): row[1] for row in csv.reader(io.StringIO(text, newline="")) if row}
    except (ValueError, IndexError) as e:
        raise ShardError(f"{path}: not a video look-up table ({e}); refusing to overwrite it") from e


def _check_clip_dir(clip_dir: Path, clip_id: str) -> None:
    """Refuse a clip folder that holds another clip's files (or files of unknown origin)."""
    marker = clip_dir / CLIP_MARKER
    if marker.is_file():
        other = marker.read_bytes().decode("utf-8", "surrogateescape").rstrip("\n")
        if other != clip_id:
            raise ShardError(
                f"{clip_dir}: holds clip {other!r}, refusing to write clip {clip_id!r} there "
                "(the export is not the same data: export into a new, empty folder)"
            )
    elif clip_dir.exists() and (not clip_dir.is_dir() or any(clip_dir.iterdir())):
        raise ShardError(
            f"{clip_dir}: has files not written by export_original_layout; refusing to write "
            f"clip {clip_id!r} there (export into a new, empty folder)"
        )


def _export_clip(reader: ShardReader, i: int, clip_dir: Path, clip_id: str) -> None:
    (clip_dir / ALIGN_FACE).mkdir(parents=True, exist_ok=True)
    (clip_dir / MFCC).mkdir(exist_ok=True)
    (clip_dir / CLIP_MARKER).write_bytes(encode_str(clip_id) + b"\n")  # first: claims the folder
    if reader.attr("image_format") == "jpeg":  # the stored JPEG files as they are
        images = [bytes(b) for b in reader.array(i, ALIGN_FACE)]
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, EXPORT_JPEG_QUALITY]
        bgr = (cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) for rgb in reader.frames(i))
        images = [cv2.imencode(".jpg", im, params)[1].tobytes() for im in bgr]
    for t, data in enumerate(images):
        (clip_dir / ALIGN_FACE / f"{t}.jpg").write_bytes(data)
    # MATLAB's fwrite of the 12x20 (coeff x time) matrix is column-major, i.e. the 20x12
    # (time x coeff) window in C order: np.fromfile(p).reshape(20, 12) gives the window back
    for number, window in zip(reader.array(i, BIN_NUMBERS), reader.mfcc(i), strict=True):
        data = np.ascontiguousarray(window, dtype="<f8").tobytes()
        (clip_dir / MFCC / f"{int(number)}.bin").write_bytes(data)


def export_original_layout(
    shard_paths: Iterable, out_root, splits: Iterable[str] | None = None, progress: bool = True
) -> dict[str, Path]:
    """Write the clips of the shards in the original DAVS folder layout; returns clip id -> folder.

    Never deletes anything. Every target is checked before anything is written: a clip folder
    holding another clip, or files of unknown origin, is refused with ShardError. Exporting the
    same data again rewrites the same files (idempotent).
    """
    out_root = Path(out_root)
    keep = None if splits is None else ({splits} if isinstance(splits, str) else set(splits))
    readers = _open_shards(shard_paths, f"export to {out_root}")
    try:
        groups: dict[tuple[str, str], list[tuple[bytes, str, int, int]]] = {}
        for r_i, r in enumerate(readers):
            for i, clip_id in enumerate(r.clip_ids):
                m = r.meta(i, ("split", "label"))
                if keep is None or m["split"] in keep:
                    cls = UNLABELLED if m["label"] < 0 else str(m["label"])
                    groups.setdefault((m["split"], cls), []).append((encode_str(clip_id), clip_id, r_i, i))
        plan, tables, seen = [], {}, set()
        for (split, cls), items in sorted(groups.items()):
            cls_dir = out_root / split / cls
            table = _read_table(cls_dir / LOOKUP_TABLE)
            for vid, (_, clip_id, r_i, i) in enumerate(sorted(items)):
                if clip_id in seen:
                    raise ShardError(f"clip {clip_id!r} is in more than one of the shards")
                seen.add(clip_id)
                if table.get(vid, clip_id) != clip_id:
                    raise ShardError(
                        f"{cls_dir / LOOKUP_TABLE}: video {vid} is clip {table[vid]!r}, refusing "
                        f"to make it {clip_id!r} (export into a new, empty folder)"
                    )
                table[vid] = clip_id
                _check_clip_dir(cls_dir / str(vid), clip_id)
                plan.append((readers[r_i], i, cls_dir / str(vid), clip_id))
            tables[cls_dir] = table
        for reader, i, clip_dir, clip_id in tqdm(
            plan, desc="export original layout", unit="clip", disable=not progress
        ):
            _export_clip(reader, i, clip_dir, clip_id)
        for cls_dir, table in tables.items():
            buf = io.StringIO()
            csv.writer(buf).writerows(sorted(table.items()))  # csv's \r\n, as the original's
            atomic_write(cls_dir / LOOKUP_TABLE, buf.getvalue().encode("utf-8", "surrogateescape"))
    finally:
        for r in readers:
            r.close()
    return {clip_id: clip_dir for _, _, clip_dir, clip_id in plan}
