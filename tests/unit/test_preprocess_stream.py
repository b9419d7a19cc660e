"""The two-pass streaming preprocessing (pipeline.process_clip + ShardWriter.add): same shard content as holding
every frame, whether pass 2 warps the frames pass 1 kept or decodes the clip again, and a clip that fails in pass 2
leaves nothing in the shard."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from davs_model.align import warp_aligned_fast
from davs_model.config import PreprocessConfig, SourceConfig
from davs_model.face import FaceLandmarker
from davs_model.io.media import iter_video_frames
from davs_model.io.shards import ShardReader, ShardWriter
from davs_model.preprocess import passes, pipeline
from davs_model.preprocess.sources import Clip
from tests.bad_inputs import _clip, talking_frames

SRC = {"x": SourceConfig(kind="folder", root="/")}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("videos")
    paths = [d / "a.mp4", d / "b.mp4"]
    _clip(paths[0], talking_frames(30, seed=1))
    _clip(paths[1], talking_frames(36, seed=2, variant=1), fps=30)  # resampled: frames are duplicated or dropped
    return paths


def _clips(paths: list[Path]) -> list[Clip]:
    return [Clip(f"x/{p.stem}", str(p), "x", "folder", "train") for p in paths]


def _content(path: Path) -> dict:
    """Every object's attributes, data and creation properties (not the write time)."""
    out = {}
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(names.append)
        for name in ["/", *names]:
            obj = f[name]
            attrs = {k: repr(obj.attrs[k]) for k in obj.attrs if k != "created"}
            out[name] = [attrs]
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                items = [bytes(x) for x in data] if data.dtype == object else [data.tobytes()]
                out[name] += [obj.dtype, obj.shape, obj.chunks, obj.fletcher32, obj.compression, items]
    return out


@pytest.mark.parametrize(("image_format", "kept"), [("jpeg", True), ("jpeg", False), ("raw", False)])
def test_streamed_shard_equals_the_shard_of_held_frames(tmp_path, videos, image_format, kept, monkeypatch):
    """pass 2 (warp and encode frame by frame the frames pass 1 kept, or the clip decoded again) = warping every
    decoded frame at once, as before."""
    if not kept:
        monkeypatch.setattr(passes, "CACHE_BYTES", 0)
    cfg, landmarker = PreprocessConfig(image_format=image_format), FaceLandmarker()
    streamed, held = tmp_path / "streamed.h5", tmp_path / "held.h5"
    records = [pipeline.process_clip(c, SRC["x"], cfg, landmarker)[0] for c in _clips(videos)]
    with ShardWriter(streamed, "train", 0, image_format=image_format) as w:
        for r in records:
            assert isinstance(r.frames_bgr, pipeline.AlignedFrames)
            assert (r.frames_bgr.frames is not None) == kept
            w.add(r)
    with ShardWriter(held, "train", 0, image_format=image_format) as w:
        for r, path in zip(records, videos, strict=True):
            frames = list(iter_video_frames(path))
            r.frames_bgr = np.stack([warp_aligned_fast(f, m) for f, m in zip(frames, r.transforms, strict=True)])
            w.add(r)
    assert _content(streamed) == _content(held)
    assert ShardReader(streamed).meta(1)["n_frames"] == 30


def test_a_clip_that_fails_in_pass_2_leaves_nothing(tmp_path, videos, monkeypatch):
    """The video changes between the passes (a shorter file): that clip gets a QC row, the others are whole."""
    paths = [tmp_path / p.name for p in videos]
    for src, dst in zip(videos, paths, strict=True):
        dst.write_bytes(src.read_bytes())
    real = pipeline.process_clips

    def then_truncate(*args):
        for record, qc in real(*args):
            if qc.clip.clip_id == "x/a":
                _clip(qc.clip.path, talking_frames(20, seed=1))  # pass 2 decodes 20 frames, pass 1 tracked 30
            yield record, qc

    monkeypatch.setattr(passes, "CACHE_BYTES", 0)  # a long clip: pass 2 decodes it again
    monkeypatch.setattr(pipeline, "process_clips", then_truncate)
    cfg = PreprocessConfig()
    rows = pipeline.build_shard(_clips(paths), SRC, cfg, "train", 0, tmp_path / "0.h5", tmp_path / "0.tsv", False)
    assert [(r.status, r.reason) for r in rows] == [("rejected", "changed_file"), ("ok", "")]
    assert "20 frames on the second decode, 30 on the first" in rows[0].message
    reader = ShardReader(tmp_path / "0.h5")
    assert reader.clip_ids == ["x/b"] and reader.frames(0).shape == (30, 260, 260, 3)
    with h5py.File(tmp_path / "0.h5") as f:
        assert list(f["clips"]) == ["000000"]  # the partial clip's group is gone
    with open(tmp_path / "0.tsv", newline="") as fh:
        assert [r["reason"].split(":")[0] for r in csv.DictReader(fh, delimiter="\t")] == ["changed_file", ""]


def test_stream_errors_drop_the_partial_clip(tmp_path):
    """A stream that raises part-way, or brings fewer or more frames than announced: the clip is not kept."""
    from tests.unit.test_shards import make_record, smooth_frames

    class Frames:
        def __init__(self, frames, n, fail_at=None):
            self.frames, self.n, self.fail_at = frames, n, fail_at

        def __len__(self):
            return self.n

        def __iter__(self):
            for j, f in enumerate(self.frames):
                if j == self.fail_at:
                    raise RuntimeError("decoder died")
                yield f

    frames = smooth_frames(40)  # > JPEG_BLOCK: the failure comes after a block was written
    with ShardWriter(tmp_path / "x.h5", "train", 0) as w:
        with pytest.raises(RuntimeError, match="decoder died"):
            w.add(make_record("a", frames=Frames(frames, 40, fail_at=35)))
        with pytest.raises(ValueError, match="39 frames arrived, 40 announced"):
            w.add(make_record("a", frames=Frames(frames[:39], 40)))
        with pytest.raises(ValueError, match="more than 39"):
            w.add(make_record("a", frames=Frames(frames, 39)))
        with pytest.raises(ValueError, match=r"frame 3: expected \(260,260,3\) uint8"):
            w.add(make_record("a", frames=Frames([*frames[:3], frames[3, :100]], 4)))
        w.add(make_record("a", frames=Frames(frames, 40)))
    reader = ShardReader(tmp_path / "x.h5")
    assert reader.clip_ids == ["a"]
    assert np.abs(reader.frames(0).astype(int) - frames[..., ::-1]).mean() < 2


def test_a_clip_over_30_min_is_rejected_before_decoding_with_the_fix():
    clip = _clips([Path("/v/long.mp4")])[0]

    class Info:
        has_audio, duration_s, n_frames, fps = True, 2 * 3600.0, 180_000, 25.0
        rotation_deg, audio_channels, audio_sample_rate = 0, 1, 16000

    with pytest.raises(pipeline.ClipRejected, match="120 min; a clip may last 30 min .*Fix: split it") as err:
        pipeline._check_input(clip, Info, PreprocessConfig())
    assert err.value.reason == "too_long"
    Info.duration_s = 25 * 60.0  # 25 min of any frame size: fine
    assert pipeline._check_input(clip, Info, PreprocessConfig()) == []


def test_clips_side_by_side_give_the_same_shard_and_qc(tmp_path, videos):
    """``landmark_batch`` 1 or 4, with bad clips among good ones: the same shard content and QC rows, in order."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "junk.mp4").write_bytes(b"not a video" * 100)
    _clip(bad / "grey.mp4", [np.full((256, 256, 3), 127, np.uint8)] * 30)  # decodes, but has no face
    paths = [videos[0], bad / "junk.mp4", videos[1], bad / "missing.mp4", bad / "grey.mp4", videos[0]]
    clips = _clips(paths)
    clips[-1] = Clip("x/a_again", str(videos[0]), "x", "folder", "train")
    shards, tables = [], []
    for batch in (1, 4):
        cfg = PreprocessConfig(landmark_batch=batch)
        out = tmp_path / f"b{batch}"
        rows = pipeline.build_shard(clips, SRC, cfg, "train", 0, out / "0.h5", out / "0.tsv", False)
        shards.append(_content(out / "0.h5"))
        tables.append([(r.clip.clip_id, r.status, r.reason, r.frames, r.detector_calls, r.notes) for r in rows])
    assert shards[0] == shards[1]
    assert tables[0] == tables[1]
    assert [(c, s, r) for c, s, r, *_ in tables[0]] == [
        ("x/a", "ok", ""),
        ("x/a_again", "ok", ""),
        ("x/b", "ok", ""),
        ("x/grey", "rejected", "no_face"),
        ("x/junk", "rejected", tables[0][4][2]),
        ("x/missing", "rejected", "missing_file"),
    ]
    assert tables[0][4][2] != ""  # the junk file's reason comes from the media layer (e.g. unreadable)


@pytest.mark.parametrize("kept", [True, False])
def test_pass_2_into_one_array_equals_fresh_arrays(videos, kept) -> None:
    """``reuse_output`` (what the pipeline gives the shard writer) writes every frame into one array; each frame,
    read before the next is drawn, equals the frame warped into an array of its own."""
    record = pipeline.process_clip(_clips(videos)[1], SRC["x"], PreprocessConfig(), FaceLandmarker())[0]
    fresh = passes.AlignedFrames(record.frames_bgr.path, 25.0, record.transforms, record.frames_bgr.frames)
    reused = passes.AlignedFrames(
        record.frames_bgr.path, 25.0, record.transforms, record.frames_bgr.frames if kept else None, True
    )
    assert record.frames_bgr.reuse_output
    arrays, n = set(), 0
    for a, b in zip(fresh, reused, strict=True):
        np.testing.assert_array_equal(a, b)
        arrays.add(id(b))
        n += 1
    assert n == len(record.transforms) == 30 and len(arrays) == 1


def test_one_core_process_sets_up_a_shard_job() -> None:
    """One BLAS and one OpenCV thread, the start-up objects frozen out of the collector; a second call changes
    nothing."""
    code = (
        "import cv2, gc, json, numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "from davs_model.preprocess.passes import one_core_process\n"
        "one_core_process(); frozen = gc.get_freeze_count(); one_core_process()\n"
        "blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "again, cv = gc.get_freeze_count(), cv2.getNumThreads()\n"
        "print(json.dumps({'blas': blas, 'frozen': frozen, 'again': again, 'cv2': cv}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    out = json.loads(done.stdout)
    assert out["blas"] and set(out["blas"]) == {1}, out
    assert out["frozen"] > 10_000 and out["again"] == out["frozen"], out
    assert out["cv2"] == 1, out


def test_one_core_job_gives_its_free_heap_back_every_trim_every_clips(tmp_path, videos, monkeypatch):
    """``build_shard(one_core=True)`` calls ``release_free_memory`` after every ``TRIM_EVERY`` clips (good or
    bad), and a library call (``one_core=False``) never does. The process-wide set-up is stubbed: pytest's process
    stays as it is."""
    calls = []
    monkeypatch.setattr(pipeline, "one_core_process", lambda: None)
    monkeypatch.setattr(pipeline, "release_free_memory", lambda: calls.append(1))
    monkeypatch.setattr(pipeline, "TRIM_EVERY", 2)
    clips = [
        *_clips(videos),
        Clip("x/a2", str(videos[0]), "x", "folder", "train"),
        *_clips([tmp_path / "gone.mp4"]),
    ]
    for one_core, expected in ((True, 2), (False, 0)):
        calls.clear()
        out = tmp_path / str(one_core)
        rows = pipeline.build_shard(
            clips, SRC, PreprocessConfig(), "train", 0, out / "0.h5", out / "0.tsv", False, one_core
        )
        assert [r.status for r in rows].count("ok") == 3 and len(calls) == expected
    passes.release_free_memory()  # the real one: glibc's malloc_trim, or nothing; never an error
