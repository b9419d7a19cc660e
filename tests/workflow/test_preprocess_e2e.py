"""End to end: `snakemake preprocess` on the demo data and on hand-made LRW / VoxCeleb2 / manifest trees with
bad inputs. Runs the real workflow in a scratch folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from davs_model.io.shards import ShardReader
from tests.conftest import REPO
from tests.workflow.helpers import run_snakemake

pytestmark = pytest.mark.slow


def _manifest(workdir: Path) -> dict[str, dict[str, str]]:
    with open(workdir / "results/qc/manifest.tsv", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return {row["clip_id"]: row for row in csv.DictReader(fh, delimiter="\t")}


def _shard_contents(workdir: Path) -> dict[str, dict]:
    clips = {}
    for path in sorted((workdir / "results/shards").glob("*/*.h5")):
        reader = ShardReader(path)
        for i, clip_id in enumerate(reader.clip_ids):
            clips[clip_id] = {"reader": reader, "index": i}
    return clips


def test_demo_preprocess_end_to_end(tmp_path):
    (tmp_path / "config.yaml").write_text((REPO / ".test/config.yaml").read_text())
    run_snakemake(tmp_path, "--cores", "2", "preprocess")

    manifest = _manifest(tmp_path)
    assert len(manifest) == 2 * 4  # 2 words × (2 train + 1 val + 1 test)
    assert {r["status"] for r in manifest.values()} == {"ok"}, manifest
    shards = _shard_contents(tmp_path)
    assert set(shards) == set(manifest)
    for clip_id, where in shards.items():
        reader, i = where["reader"], where["index"]
        frames = reader.frames(i)
        mfcc = reader.mfcc(i)
        meta = reader.meta(i)
        assert frames.shape == (29, 260, 260, 3) and frames.dtype == np.uint8
        assert mfcc.shape == (25, 20, 12) and np.isfinite(mfcc).all()  # LRW protocol: bins 2..26
        assert meta["label"] in (0, 1) and meta["word"] in ("ABOUT", "HOUSE")
        assert float(manifest[clip_id]["detection_rate"]) == 1.0
        # aligned faces: the grey border is not where the face is; the face is bright-ish, not 127 everywhere
        assert np.abs(frames[:, 100:200, 80:180].astype(float) - 127).mean() > 10

    for split, n in [("train", 4), ("val", 2), ("test", 2)]:
        index = json.loads((tmp_path / f"results/shards/{split}/index.json").read_text())
        assert index["n_clips"] == n
    summary = json.loads((tmp_path / "results/qc/summary.json").read_text())
    assert summary["ok"] == 8
    assert (tmp_path / "results/qc/qc.png").stat().st_size > 10_000
    assert list((tmp_path / "logs/build_shard").rglob("*.log"))
    assert list((tmp_path / "benchmarks/build_shard").rglob("*.tsv"))

    # the original folder layout, readable the original's way
    run_snakemake(tmp_path, "--cores", "2", "export_original")
    clip_dirs = sorted((tmp_path / "results/original_layout/train").glob("*/*"))
    clip_dirs = [d for d in clip_dirs if d.is_dir()]
    assert len(clip_dirs) == 4
    first = clip_dirs[0]
    assert sorted(int(p.stem) for p in (first / "align_face256").glob("*.jpg")) == list(range(29))
    assert sorted(int(p.stem) for p in (first / "mfcc20").glob("*.bin")) == list(range(2, 27))
    assert np.fromfile(first / "mfcc20/2.bin").reshape(20, 12).dtype == np.float64

    # nothing left to do on a second run
    proc = run_snakemake(tmp_path, "--cores", "2", "preprocess")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _make_trees(root: Path) -> dict[str, str]:
    """LRW, VoxCeleb2 and manifest sources made from demo clips, plus bad inputs. Returns clip id → expected."""
    from davs_model.demo.dataset import DemoConfig, make_demo_clip
    from davs_model.io.writer import write_mp4

    cfg = DemoConfig(words=("ABOUT", "HOUSE"), voices=("en",), clips_per_word={"train": 1}, seed=3)
    good = root / "good"
    made = {}
    for word in cfg.words:
        path = good / f"{word}.mp4"
        make_demo_clip(cfg, word, "train", 1, path)
        made[word] = path
    expected: dict[str, str] = {}

    lrw = root / "lipread_mp4"
    for word, src in made.items():
        for split in ("train", "test"):
            dst = lrw / word / split / f"{word}_00001.mp4"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            expected[f"lrw/{word}/{split}/{word}_00001"] = "ok"
    data = made["ABOUT"].read_bytes()
    (lrw / "ABOUT/train/ABOUT_00002.mp4").write_bytes(data[: len(data) // 3])  # truncated
    expected["lrw/ABOUT/train/ABOUT_00002"] = "rejected"
    (lrw / "HOUSE/train/HOUSE_00002.mp4").write_bytes(b"")  # 0 bytes
    expected["lrw/HOUSE/train/HOUSE_00002"] = "rejected"

    vox = root / "vox2"
    for split, speaker in (("dev", "id00017"), ("test", "id00812")):
        dst = vox / split / "mp4" / speaker / "abcDEF_123" / "00001.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(made["HOUSE"], dst)
        expected[f"vox/{split}/mp4/{speaker}/abcDEF_123/00001"] = "ok"
    # box metadata for one clip: normalised boxes around the demo face (replaces detection)
    txt = vox / "dev" / "txt" / "id00017" / "abcDEF_123" / "00001.txt"
    txt.parent.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"{100 + i:06d}\t0.250\t0.200\t0.500\t0.600" for i in range(29))
    txt.write_text(
        "Identity  : \tid00017\nReference : \tabcDEF_123\nOffset    : \t0\nFV Conf   : \t17.0\n"
        f"ASD Conf  : \t5.0\n\nFRAME \tX \tY \tW \tH \n{rows}\n"
    )

    other = root / "other videos"
    other.mkdir()
    frames = [np.full((256, 256, 3), 90, np.uint8) for _ in range(20)]
    audio = (np.sin(np.arange(16000) * 0.05) * 3000).astype(np.int16)
    write_mp4(other / "no face.mp4", frames, fps=25, audio=audio, sample_rate=16000)
    shutil.copy(made["ABOUT"], other / "tmp.mp4")
    import av

    with av.open(str(other / "tmp.mp4")) as src, av.open(str(other / "no audio.mp4"), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    (other / "tmp.mp4").unlink()
    shutil.copy(made["HOUSE"], other / 'it\'s "quoted" and spaced.mp4')
    (root / "videos.tsv").write_text(
        "path\tsplit\tlabel\tspeaker\n"
        "other videos/no face.mp4\ttrain\t0\tx\n"
        "other videos/no audio.mp4\ttrain\t0\tx\n"
        'other videos/it\'s "quoted" and spaced.mp4\tval\t1\ty\n'
        "other videos/missing.mp4\ttrain\t1\ty\n"
    )
    expected["mine/other videos/no face"] = "rejected"
    expected["mine/other videos/no audio"] = "rejected"
    expected['mine/other videos/it\'s "quoted" and spaced'] = "ok"
    expected["mine/other videos/missing"] = "rejected"
    return expected


def test_lrw_voxceleb_manifest_and_bad_inputs(tmp_path):
    expected = _make_trees(tmp_path)
    (tmp_path / "config.yaml").write_text(
        "sources:\n"
        "  lrw: {kind: lrw, root: lipread_mp4}\n"
        "  vox: {kind: voxceleb2, root: vox2, boxes_root: vox2}\n"
        "  mine: {kind: manifest, path: videos.tsv}\n"
        "preprocess:\n  shards: {train: 2, val: 1, test: 1}\n"
    )
    proc = run_snakemake(tmp_path, "--cores", "2", "preprocess")
    assert proc.returncode == 0
    manifest = _manifest(tmp_path)
    assert set(manifest) == set(expected), sorted(set(manifest) ^ set(expected))
    for clip_id, status in expected.items():
        assert manifest[clip_id]["status"] == status, manifest[clip_id]
        if status != "ok":
            assert manifest[clip_id]["reason"], manifest[clip_id]
    assert manifest["mine/other videos/no audio"]["reason"].startswith("no_audio_stream")
    assert manifest["mine/other videos/no face"]["reason"].startswith("no_face")
    assert manifest["lrw/HOUSE/train/HOUSE_00002"]["reason"].startswith("empty_file")
    # every good clip is in a shard, with its label / speaker
    shards = _shard_contents(tmp_path)
    good = {k for k, v in expected.items() if v == "ok"}
    assert set(shards) == good
    vox_meta = shards["vox/dev/mp4/id00017/abcDEF_123/00001"]
    meta = vox_meta["reader"].meta(vox_meta["index"])
    assert meta["speaker"] == "id00017"
    assert int(manifest["vox/dev/mp4/id00017/abcDEF_123/00001"]["detector_calls"]) == 0  # boxes replaced detection
    lrw_meta = shards["lrw/HOUSE/test/HOUSE_00001"]
    assert lrw_meta["reader"].meta(lrw_meta["index"])["label"] == 1
    # nothing was deleted: every input is still there
    assert (tmp_path / "lipread_mp4/HOUSE/train/HOUSE_00002.mp4").exists()
    assert (tmp_path / "other videos/no face.mp4").exists()
