"""VoxCeleb's per-frame face boxes (the ``txt`` metadata next to each clip), read into pixels of the frame.

``pipeline`` reads them in a shard job, where they replace face detection; ``sources`` only finds the files.
"""

from __future__ import annotations

import math

import numpy as np


def read_voxceleb_boxes(
    txt_path, kind: str, frame_width: int, frame_height: int, n_frames: int | None = None
) -> np.ndarray:
    """(n_frames, 4) float64 [x, y, w, h] in pixels of the actual frame; NaN rows = no entry.

    Rows after the ``FRAME X Y W H`` header; frame numbers are absolute and indexed relative to
    the first row. ``kind``: "voxceleb2"/"normalized" (fractions of the frame) or
    "voxceleb1"/"pixels360" (pixels of a 360-px-high reference frame). ``n_frames`` defaults to
    last - first + 1; longer files are cut, shorter ones padded with NaN.
    """
    if kind in ("voxceleb2", "normalized"):
        scale = np.array([frame_width, frame_height, frame_width, frame_height], float)
    elif kind in ("voxceleb1", "pixels360"):
        scale = np.full(4, frame_height / 360.0)
    else:
        raise ValueError(f"read_voxceleb_boxes: kind {kind!r}; use voxceleb1 or voxceleb2")
    rows: dict[int, list[float]] = {}
    header_seen = False
    with open(txt_path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            tok = line.split()
            if not header_seen:
                header_seen = bool(tok) and tok[0].upper() == "FRAME"
                continue
            if not tok:
                continue
            try:
                fr, vals = int(tok[0]), [float(x) for x in tok[1:5]]
            except ValueError:
                vals = []
            if len(vals) != 4 or not all(map(math.isfinite, vals)):
                msg = f"{txt_path}:{lineno}: bad row {line.strip()!r}, expected 'FRAME X Y W H'"
                raise ValueError(msg + "; fix or delete the row (or the file)")
            rows[fr] = vals
    if not header_seen:
        msg = f"{txt_path}: no 'FRAME X Y W H' header, not VoxCeleb metadata"
        raise ValueError(msg + "; point boxes_root at the VoxCeleb txt folder")
    first = min(rows) if rows else 0
    n = (max(rows) - first + 1 if rows else 0) if n_frames is None else int(n_frames)
    out = np.full((n, 4), np.nan)
    for fr, vals in rows.items():
        if 0 <= fr - first < n:
            out[fr - first] = vals
    return out * scale
