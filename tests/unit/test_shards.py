"""Tests of davs_model.io.shards / davs_model.io.export: HDF5 shards, index, original layout."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from davs_model import SHARD_FORMAT_VERSION
from davs_model.io import shards
from davs_model.io.export import CLIP_MARKER, LOOKUP_TABLE
from davs_model.io.shards import ClipRecord, ShardError, ShardReader, ShardWriter

S = 260
ODD_ID = 'dir with space/it\'s a "quoted", clip \udcff end'  # \udcff: the byte 0xff of a file name
REPO = Path(__file__).resolve().parents[2]


def smooth_frames(t: int, seed: int = 0) -> np.ndarray:
    """(t,260,260,3) uint8 BGR: smooth colour gradients, a little different in every frame."""
    y, x = np.mgrid[0:S, 0:S] / S
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    out = []
    for k in range(t):
        chans = [
            128 + 90 * np.sin(2 * np.pi * (x + 0.5 * y) + phase[0] + 0.1 * k),
            128 + 90 * np.cos(2 * np.pi * (y - 0.3 * x) + phase[1]),
            40 + 180 * x * y + 5 * k,
        ]
        out.append(np.stack(chans, -1))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_record(clip_id="lrw/ABOUT/train/ABOUT_00001", label=3, t=6, n=None, seed=0, frames=None):
    rng = np.random.default_rng(seed)
    frames = smooth_frames(t, seed) if frames is None else frames
    t = len(frames)
    n = max(t - 4, 0) if n is None else n
    numbers = np.arange(2, 2 + n)
    return ClipRecord(
        clip_id=clip_id,
        source="lrw",
        split="train",
        label=label,
        word="ABOUT",
        speaker="",
        frames_bgr=frames,
        mfcc=rng.normal(0, 10, (n, 20, 12)),
        bin_numbers=numbers,
        frame_index=numbers.copy(),
        transforms=rng.normal(0, 1, (t, 2, 3)),
        detected=rng.random(t) > 0.3,
        input_fps=29.97,
        extra={"detection_rate": 0.75, "n_faces": 2, "detector": "hog \udcfe"},
    )


def write_shard(path, records, image_format="jpeg", split="train", shard=0) -> Path:
    with ShardWriter(path, split=split, shard=shard, image_format=image_format) as w:
        for r in records:
            w.add(r)
    return Path(path)


# ----------------------------------------------------------------------------- round trips


def test_jpeg_round_trip(tmp_path):
    rec = make_record(t=7)
    path = write_shard(tmp_path / "000.h5", [rec])
    r = ShardReader(path)
    assert len(r) == 1 and r.clip_ids == [rec.clip_id] and r.index_of(rec.clip_id) == 0
    frames = r.frames(0)
    assert frames.shape == (7, S, S, 3) and frames.dtype == np.uint8
    expected_rgb = rec.frames_bgr[..., ::-1].astype(float)
    assert np.abs(frames - expected_rgb).mean() < 3  # JPEG q95 on a smooth image
    # only the requested frames, in the requested order (repeats allowed); negative ints, slices
    np.testing.assert_array_equal(r.frames(0, [5, 1, 5]), frames[[5, 1, 5]])
    np.testing.assert_array_equal(r.frames(0, -1), frames[-1:])
    np.testing.assert_array_equal(r.frames(0, slice(1, 6, 2)), frames[1:6:2])
    assert r.frames(0, []).shape == (0, S, S, 3)
    with pytest.raises(IndexError):
        r.frames(0, [7])


def test_raw_round_trip_is_exact_and_rgb(tmp_path):
    blue = np.zeros((2, S, S, 3), np.uint8)
    blue[..., 0] = 255  # pure blue in OpenCV's BGR order
    frames = np.concatenate([blue, smooth_frames(3)])
    path = write_shard(tmp_path / "raw.h5", [make_record(frames=frames)], image_format="raw")
    r = ShardReader(path)
    out = r.frames(0)
    assert tuple(out[0, 10, 10]) == (0, 0, 255)  # RGB
    np.testing.assert_array_equal(out, frames[..., ::-1])
    np.testing.assert_array_equal(r.frames(0, [4, 0, 4]), frames[[4, 0, 4]][..., ::-1])
    with h5py.File(path) as f:
        ds = f["clips/000000/align_face256"]
        assert ds.shape == (5, S, S, 3) and ds.chunks == (1, S, S, 3) and ds.compression is None
        assert f.attrs["image_format"] == "raw"


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_scattered_frame_lists_equal_the_full_read(tmp_path, image_format, monkeypatch):
    """Any index list (far-apart runs read as separate slices, gaps inside a slice dropped, repeats, any order)
    gives the frames a full contiguous read gives."""
    path = write_shard(tmp_path / "s.h5", [make_record(t=40)], image_format=image_format)
    r = ShardReader(path)
    full = r.frames(0)
    monkeypatch.setattr(shards, "MAX_GAP_RAW", 3)
    monkeypatch.setattr(shards, "MAX_GAP_JPEG", 3)
    rng = np.random.default_rng(0)
    cases = [[0, 39], [39, 0, 1, 2, 20, 2], [5, 9, 13, 30, 31, 38], list(range(2, 40, 2)), [7]]
    cases += [list(rng.integers(0, 40, int(rng.integers(1, 30)))) for _ in range(6)]
    for idx in cases:
        np.testing.assert_array_equal(r.frames(0, idx), full[idx], err_msg=str(idx))
        np.testing.assert_array_equal(r.frames(0, np.array(idx)), full[idx], err_msg=str(idx))


def test_stored_jpeg_bytes_are_standard_jpeg_with_the_input_colours(tmp_path):
    red = np.zeros((1, S, S, 3), np.uint8)
    red[..., 2] = 255  # pure red, BGR
    path = write_shard(tmp_path / "j.h5", [make_record(frames=red)])
    with h5py.File(path) as f:
        data = f["clips/000000/align_face256"][0]
        assert f.attrs["jpeg_quality"] == 95
    assert data.dtype == np.uint8 and bytes(data[:2]) == b"\xff\xd8"  # JPEG SOI marker
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)  # any JPEG decoder: OpenCV gives BGR
    assert np.abs(decoded.astype(int) - red[0]).max() <= 2
    assert tuple(ShardReader(path).frames(0)[0, 5, 5]) == pytest.approx((255, 0, 0), abs=2)


def test_arrays_and_attrs_are_exact(tmp_path):
    recs = [make_record(f"clip{k}", label=k - 1, seed=k) for k in range(3)]
    path = write_shard(tmp_path / "s.h5", recs, split="train", shard=7)
    r = ShardReader(path)
    for i, rec in enumerate(recs):
        c = r.clip(i)
        np.testing.assert_array_equal(r.mfcc(i), rec.mfcc)
        assert r.mfcc(i).dtype == np.float64 and r.mfcc(i).shape == (2, 20, 12)
        for key in ("mfcc", "bin_numbers", "frame_index", "transforms", "detected"):
            np.testing.assert_array_equal(c[key], getattr(rec, key))
        assert c["detected"].dtype == bool and c["transforms"].dtype == np.float64
        assert c["frames"].shape == (6, S, S, 3)
        meta = r.meta(i)
        strings = {k: meta[k] for k in ("clip_id", "source", "split", "word", "speaker")}
        assert strings == {
            "clip_id": rec.clip_id, "source": "lrw", "split": "train", "word": "ABOUT",
            "speaker": "",
        }  # fmt: skip
        assert meta["label"] == rec.label and type(meta["label"]) is int
        assert meta["input_fps"] == 29.97 and (meta["n_frames"], meta["n_bins"]) == (6, 2)
        assert meta["extra"] == rec.extra
    assert r.attr("shard") == 7 and r.attr("split") == "train"
    assert r.attr("format_version") == SHARD_FORMAT_VERSION
    assert r.attr("created")[:2] == "20" and r.attr("davs_model_version")
    assert r.meta(-1)["clip_id"] == "clip2"
    with pytest.raises(IndexError, match="out of range"):
        r.meta(3)
    with pytest.raises(KeyError, match="no clip"):
        r.index_of("nope")


def test_odd_clip_ids_survive(tmp_path):
    ids = [ODD_ID, "plain", "ünïcödé/名前"]
    path = write_shard(tmp_path / "odd.h5", [make_record(c, seed=k) for k, c in enumerate(ids)])
    r = ShardReader(path)
    assert r.clip_ids == ids
    assert [r.index_of(c) for c in ids] == [0, 1, 2]
    assert r.meta(0)["clip_id"] == ODD_ID
    assert r.meta(0)["extra"]["detector"] == "hog \udcfe"
    with h5py.File(path) as f:  # the undecodable byte is stored as itself
        assert f["clip_ids"][0] == ODD_ID.encode("utf-8", "surrogateescape")


def test_empty_shard_is_valid(tmp_path):
    path = write_shard(tmp_path / "empty.h5", [])
    r = ShardReader(path)
    assert len(r) == 0 and r.clip_ids == []
    assert shards.write_index([path], tmp_path / "index.json", "train")["n_clips"] == 0


def test_invalid_records_are_refused(tmp_path):
    with ShardWriter(tmp_path / "x.h5", "train", 0) as w:
        with pytest.raises(ValueError, match="frames_bgr"):
            w.add(make_record(frames=np.zeros((2, 256, 256, 3), np.uint8)))
        rec = make_record()
        rec.frame_index = rec.frame_index + 10
        with pytest.raises(ValueError, match="frame_index"):
            w.add(rec)
        rec = make_record()
        rec.extra = {"label": 3}
        with pytest.raises(ValueError, match="clash"):
            w.add(rec)
        w.add(make_record("a"))
        with pytest.raises(ValueError, match="added twice"):
            w.add(make_record("a"))
    assert ShardReader(tmp_path / "x.h5").clip_ids == ["a"]
    with pytest.raises(RuntimeError, match="outside"):
        ShardWriter(tmp_path / "y.h5", "train", 0).add(make_record())
    with pytest.raises(ValueError, match="image_format"):
        ShardWriter(tmp_path / "y.h5", "train", 0, image_format="png")


# ----------------------------------------------------------------------------- atomicity


def test_exception_inside_with_leaves_nothing_and_touches_nothing_else(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    older = tmp_path / "001.h5.tmp-1"  # somebody else's temporary file
    older.write_text("not mine")
    final = tmp_path / "000.h5"
    with pytest.raises(RuntimeError, match="boom"), ShardWriter(final, "train", 0) as w:
        w.add(make_record())
        assert w.tmp_path.exists() and w.tmp_path.name == f"000.h5.tmp-{os.getpid()}"
        raise RuntimeError("boom")
    assert not final.exists() and not w.tmp_path.exists()
    assert other.read_text() == "keep me" and older.read_text() == "not mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001.h5.tmp-1", "notes.txt"]


def test_failed_rewrite_keeps_the_previous_shard(tmp_path):
    final = write_shard(tmp_path / "000.h5", [make_record("old")])
    with pytest.raises(KeyboardInterrupt), ShardWriter(final, "train", 0) as w:
        w.add(make_record("new"))
        raise KeyboardInterrupt
    assert ShardReader(final).clip_ids == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["000.h5"]


def test_crash_mid_write_leaves_no_final_file(tmp_path):
    final = tmp_path / "000.h5"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_shards import make_record
        from davs_model.io.shards import ShardWriter
        with ShardWriter({str(final)!r}, "train", 0) as w:
            w.add(make_record())
            w._f.flush()
            print(os.getpid(), flush=True)
            os._exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert not final.exists()
    # only the dead writer's own temporary file is left (a later run writes its own, new one)
    assert [p.name for p in tmp_path.iterdir()] == [f"000.h5.tmp-{int(proc.stdout)}"]
    with pytest.raises(ShardError, match="not found"):
        len(ShardReader(final))


# ----------------------------------------------------------------------------- reader robustness


def test_reader_pickles_and_reopens(tmp_path):
    path = write_shard(tmp_path / "p.h5", [make_record("a"), make_record("b", seed=1)])
    r = ShardReader(path)
    first = r.frames(1, [0])  # opens the file
    assert r._f is not None
    clone = pickle.loads(pickle.dumps(r))
    assert clone._f is None and clone.clip_ids == ["a", "b"]
    np.testing.assert_array_equal(clone.frames(1, [0]), first)
    assert clone._f is not None
    np.testing.assert_array_equal(r.mfcc(0), clone.mfcc(0))  # the original still works


def test_reader_is_lazy(tmp_path):
    r = ShardReader(tmp_path / "later.h5")  # nothing there yet: no error until first use
    write_shard(tmp_path / "later.h5", [make_record()])
    assert len(r) == 1


def test_format_version_mismatch_is_a_clear_error(tmp_path):
    path = write_shard(tmp_path / "v.h5", [make_record()])
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = SHARD_FORMAT_VERSION + 1
    with pytest.raises(ShardError) as err:
        len(ShardReader(path))
    msg = str(err.value)
    assert str(path) in msg and "snakemake preprocess" in msg and "format changed" in msg


def test_not_a_shard_is_a_clear_error(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(ShardError, match="not a DAVS shard") as err:
        len(ShardReader(path))
    assert str(path) in str(err.value) and "snakemake preprocess" in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_file_is_a_clear_error(tmp_path, damage):
    path = write_shard(tmp_path / "d.h5", [make_record(t=10)])
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        path.write_bytes(b"")
    with pytest.raises(ShardError) as err:
        r = ShardReader(path)
        assert len(r) == 1
        r.frames(0)
    assert str(path) in str(err.value)
    assert isinstance(err.value.__cause__, OSError | KeyError)


# ----------------------------------------------------------------------------- index


def test_write_index(tmp_path):
    a = write_shard(tmp_path / "shards/train/000.h5", [make_record("x", label=0, t=6)])
    recs = [make_record(ODD_ID, label=2, t=9, seed=1), make_record("y", label=-1, t=5)]
    b = write_shard(tmp_path / "shards/train/001.h5", recs, shard=1)
    out = tmp_path / "shards/train/index.json"
    doc = shards.write_index([a, b], out, split="train")
    on_disk = json.loads(out.read_text())
    assert on_disk == doc
    assert doc["format_version"] == SHARD_FORMAT_VERSION and doc["split"] == "train"
    assert doc["n_clips"] == 3 and doc["n_frames"] == 6 + 9 + 5
    assert doc["shards"] == [
        {"path": "000.h5", "shard": 0, "n_clips": 1},
        {"path": "001.h5", "shard": 1, "n_clips": 2},
    ]
    assert doc["clips"][ODD_ID] == {
        "shard": 1, "index": 0, "n_frames": 9, "n_bins": 5, "label": 2, "speaker": ""
    }  # fmt: skip
    assert doc["clips"]["y"]["label"] == -1
    # paths relative to the index file's folder
    assert (out.parent / doc["shards"][1]["path"]).resolve() == b.resolve()
    assert [p.name for p in out.parent.iterdir() if "tmp" in p.name] == []


def test_write_index_errors(tmp_path):
    a = write_shard(tmp_path / "000.h5", [make_record("x")])
    with pytest.raises(ShardError, match="does not exist") as err:
        shards.write_index([a, tmp_path / "missing.h5"], tmp_path / "index.json", "train")
    assert "missing.h5" in str(err.value)
    with pytest.raises(ShardError, match="split"):
        shards.write_index([a], tmp_path / "index.json", "val")
    b = write_shard(tmp_path / "001.h5", [make_record("x")], shard=1)
    with pytest.raises(ShardError, match="also in"):
        shards.write_index([a, b], tmp_path / "index.json", "train")
    assert not (tmp_path / "index.json").exists()


# ----------------------------------------------------------------------------- original layout


def _export_fixture(tmp_path, image_format="jpeg"):
    recs = [
        make_record("lrw/ABOUT/train/ABOUT_00002", label=0, t=29, n=25, seed=1),
        make_record("lrw/ABOUT/train/ABOUT_00001", label=0, t=29, n=25, seed=2),
        make_record(ODD_ID, label=1, t=5, seed=3),
        make_record("vox/id1/x/00001", label=-1, t=8, seed=4),
    ]
    path = write_shard(tmp_path / f"{image_format}.h5", recs, image_format=image_format)
    return path, recs


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_export_original_layout(tmp_path, image_format):
    path, recs = _export_fixture(tmp_path, image_format)
    root = tmp_path / "data"
    dirs = shards.export_original_layout([path], root, progress=False)
    about1, about2, odd, vox = (dirs[r.clip_id] for r in (recs[1], recs[0], recs[2], recs[3]))
    assert about1 == root / "train/0/0" and about2 == root / "train/0/1"  # sorted by clip id
    assert odd == root / "train/1/0" and vox == root / "train/unlabelled/0"
    rec = recs[1]
    images = sorted((about1 / "align_face256").iterdir(), key=lambda p: int(p.stem))
    assert [p.name for p in images] == [f"{t}.jpg" for t in range(29)]
    for t in (0, 2, 28):
        bgr = cv2.imread(str(about1 / f"align_face256/{t}.jpg"))
        assert bgr.shape == (S, S, 3) and np.abs(bgr - rec.frames_bgr[t].astype(float)).mean() < 3
    if image_format == "jpeg":  # the stored JPEG files, not re-encoded
        with h5py.File(path) as f:
            stored = bytes(f["clips/000000/align_face256"][3])  # shard order = insertion order
        assert (about2 / "align_face256/3.jpg").read_bytes() == stored
    bins = sorted((about1 / "mfcc20").iterdir(), key=lambda p: int(p.stem))
    assert [p.name for p in bins] == [f"{n}.bin" for n in range(2, 27)]
    for k, number in enumerate(rec.bin_numbers):
        p = about1 / f"mfcc20/{number}.bin"
        assert p.stat().st_size == 1920
        np.testing.assert_array_equal(np.fromfile(p).reshape(20, 12), rec.mfcc[k])  # as DAVS reads
        matlab = np.frombuffer(p.read_bytes(), "<f8").reshape(12, 20, order="F")  # fwrite 12x20
        np.testing.assert_array_equal(matlab, rec.mfcc[k].T)
    with open(root / "train/0" / LOOKUP_TABLE, newline="") as fh:
        assert list(csv.reader(fh)) == [["0", recs[1].clip_id], ["1", recs[0].clip_id]]
    raw_table = (root / "train/1" / LOOKUP_TABLE).read_bytes()
    with open(root / "train/1" / LOOKUP_TABLE, newline="", errors="surrogateescape") as fh:
        assert list(csv.reader(fh)) == [["0", ODD_ID]]
    assert b"\xff" in raw_table and raw_table.endswith(b"\r\n")


def test_export_is_idempotent_and_refuses_other_clips(tmp_path):
    path, recs = _export_fixture(tmp_path)
    root = tmp_path / "data"
    shards.export_original_layout([path], root, progress=False)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    shards.export_original_layout([path], root, progress=False)  # same data: fine, same files
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    # different data: a new clip sorts first in class 0, so video 0 would become another clip
    other = write_shard(tmp_path / "other.h5", [make_record("lrw/ABOUT/train/ABOUT_00000", label=0)])
    with pytest.raises(ShardError, match="refusing"):
        shards.export_original_layout([path, other], root, progress=False)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # nothing written
    # a clip folder with files from elsewhere (e.g. the original preprocessing)
    foreign = tmp_path / "foreign"
    (foreign / "train/0/0/align_face256").mkdir(parents=True)
    (foreign / "train/0/0/align_face256/0.jpg").write_bytes(b"x")
    with pytest.raises(ShardError, match="not written by export_original_layout"):
        shards.export_original_layout([path], foreign, progress=False)
    assert (foreign / "train/0/0/align_face256/0.jpg").read_bytes() == b"x"
    # another clip's marker
    (root / "train/1/0" / CLIP_MARKER).write_text("someone else\n")
    with pytest.raises(ShardError, match="holds clip 'someone else'"):
        shards.export_original_layout([path], root, progress=False)


def test_export_splits_filter_and_missing_shard(tmp_path):
    path, _ = _export_fixture(tmp_path)
    dirs = shards.export_original_layout([path], tmp_path / "out", splits=["val"], progress=False)
    assert dirs == {} and not (tmp_path / "out/train").exists()
    with pytest.raises(ShardError, match="does not exist"):
        shards.export_original_layout([tmp_path / "nope.h5"], tmp_path / "out", progress=False)
