"""The bad-input corpus (tests/bad_inputs.py): one `snakemake preprocess` over a folder source that mixes every
per-clip kind with good clips, plus fast checks of a corrupted shard and of bad config files."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from davs_model.config import schema_errors
from davs_model.io.shards import ShardError, ShardReader
from tests.bad_inputs import Case, bad_configs, corrupt_shard, make_corpus
from tests.conftest import REPO
from tests.workflow.helpers import run_snakemake

pytestmark = pytest.mark.slow
LONG_SECONDS = 30.0  # the long clip: 750 frames, 3x a long VoxCeleb clip (bench/reliability_table.py runs 60 s)

# Expected QC notes (the row says what the pipeline adapted), by file name.
NOTES = {
    "two_faces.mp4": "2 faces in a frame: tracked the largest",
    "fps_30.mp4": "resampled 30.000 -> 25 fps",
    "fps_29.97.mp4": "resampled 29.970 -> 25 fps",
    "stereo_44100.mp4": "2 audio channels: used the first",
    "stereo_48000.mp4": "audio resampled 48000 -> 16000 Hz",
    "audio_shorter.mp4": "s before the video: the last frames have no MFCC window",
    "phone_rotated.mp4": "rotated 90 deg clockwise",
    "caf\udce9 \udcff.mp4": "file name is not UTF-8",
}


def _hashes(root: Path) -> dict[bytes, str]:
    """blake2b of every file below ``root`` (bytes paths: names need not be UTF-8)."""
    out = {}
    for d, _, files in os.walk(bytes(root)):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out[os.path.join(d, f)] = hashlib.blake2b(fh.read()).hexdigest()
    return out


def _mouth_at(transform: np.ndarray) -> np.ndarray:
    """The source-frame point that the alignment puts at the template's mouth (canvas 180, 300)."""
    return cv2.invertAffineTransform(transform) @ np.array([180.0, 300.0, 1.0])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("bad inputs")  # a space in every path
    return root, make_corpus(root, long_seconds=LONG_SECONDS)


def test_snakemake_preprocess_over_the_bad_input_corpus(corpus):
    root, cases = corpus
    clips = [c for c in cases if c.level == "clip"]
    assert sum(c.kind == "good clip" for c in clips) >= 3
    before = _hashes(root / "videos")
    (root / "config.yaml").write_text(
        yaml.safe_dump({"sources": {"bad": {"kind": "folder", "root": str(root / "videos")}}})
        + "preprocess:\n  shards: {train: 2}\n"
    )
    proc = run_snakemake(root, "--cores", "2", "preprocess")
    assert proc.returncode == 0

    with open(root / "results/qc/manifest.tsv", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh, delimiter="\t")}
    assert sorted(rows) == sorted(str(c.path) for c in clips)
    shards = {}
    for path in sorted((root / "results/shards/train").glob("*.h5")):
        reader = ShardReader(path)
        shards.update({cid: (reader, i) for i, cid in enumerate(reader.clip_ids)})
    for case in clips:
        row, name = rows[str(case.path)], case.path.name
        assert row["status"] == case.status, (case.kind, row)
        assert NOTES.get(name, "\0") in row["notes"] or name not in NOTES, (case.kind, row["notes"])
        if case.status == "ok":
            assert int(row["frames"]) == case.frames, (case.kind, row)
            reader, i = shards.pop(row["clip_id"])  # every good clip is in a shard
            assert reader.meta(i)["n_frames"] == case.frames
            assert 0 < int(row["n_bins"]) <= case.frames - 4
        else:  # a reason code, then a message that says why (and what to do)
            code, _, message = row["reason"].partition(": ")
            assert code == case.reason and len(message) > 20, (case.kind, row)
            assert row["clip_id"] not in shards
    assert not shards, f"clips in shards that are not ok: {sorted(shards)}"
    assert _hashes(root / "videos") == before  # nothing deleted or modified
    # frames stream: the 720p clip (2.2 GiB of decoded frames at 30 s) never sits in memory whole
    for bench in (root / "benchmarks/build_shard/train").glob("*.tsv"):
        with open(bench, newline="") as fh:
            assert all(float(r["max_rss"]) < 1000 for r in csv.DictReader(fh, delimiter="\t")), bench.read_text()

    by_name = {Path(r["path"]).name: r for r in rows.values()}
    assert by_name["two_faces.mp4"]["faces"] == "2" and by_name["good_0.mp4"]["faces"] == "1"
    assert int(by_name["audio_shorter.mp4"]["n_bins"]) < int(by_name["good_0.mp4"]["n_bins"])
    assert by_name["caf\udce9 \udcff.mp4"]["clip_id"] == "bad/caf\\xe9 \\xff"
    # two faces: the larger face (on the left, x < 256) was tracked in every frame
    reader, i = next(_find(root, "bad/two_faces"))
    assert all(_mouth_at(m)[0] < 256 for m in reader.array(i, "transforms"))


def _find(root: Path, clip_id: str):
    for path in sorted((root / "results/shards/train").glob("*.h5")):
        reader = ShardReader(path)
        if clip_id in reader.clip_ids:
            yield reader, reader.index_of(clip_id)


def _read_everything(path: Path) -> None:
    reader = ShardReader(path)
    for i in range(len(reader)):
        reader.clip(i)


def test_corrupted_shard_names_the_file_and_the_fix(tmp_path):
    from davs_model.data.dataset import ShardClipDataset

    path = corrupt_shard(tmp_path / "000.h5")
    with pytest.raises(ShardError, match=r"000\.h5: .*re-run `snakemake preprocess`"):
        _read_everything(path)
    windows = dict(pred_length=2, stride=1, sequence_length=1, disfc_length=2)
    with pytest.raises(ShardError, match=r"000\.h5: .*re-run `snakemake preprocess`"):
        dataset = ShardClipDataset([path], split="train", image_size=64, train=True, **windows)
        for i in range(len(dataset)):
            dataset[i]


@pytest.mark.parametrize("at", np.linspace(0.0, 1.0, 17).round(4).tolist())
def test_shard_corruption_anywhere_is_detected(tmp_path, at):
    """4 KiB overwritten anywhere (JPEG bytes, arrays or HDF5 metadata) never reads back silently."""
    path = corrupt_shard(tmp_path / "000.h5", at=at)
    with pytest.raises(ShardError, match=r"000\.h5: "):
        _read_everything(path)


def test_config_errors_name_the_key(tmp_path):
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    unknown, wrong = (yaml.safe_load(c.path.read_text()) for c in bad_configs(tmp_path))
    assert schema_errors(unknown, schema) == [
        "unknown key preprocess.min_frame (did you mean 'min_frames'?); known: "
        + ", ".join(sorted(schema["properties"]["preprocess"]["properties"]))
    ]
    assert schema_errors(wrong, schema) == [
        "preprocess.keyframe_interval: 'every twelve' is not of type 'integer'"
    ]
    assert schema_errors(yaml.safe_load((REPO / "config.yaml").read_text()), schema) == []
    proc = run_snakemake(tmp_path / "unknown_key", "--dry-run", "preprocess", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "unknown key preprocess.min_frame (did you mean 'min_frames'?)" in out
    assert len(out.splitlines()) < 15, out  # the message, not the whole schema
