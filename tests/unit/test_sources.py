from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from davs_model.preprocess.boxes import read_voxceleb_boxes
from davs_model.preprocess.sources import (
    Clip,
    discover_folder,
    discover_lrw,
    discover_manifest,
    discover_voxceleb,
)

VOX2_TXT = """Identity  : \tid00012
Reference : \t21Uxsk56VDQ
Offset    : \t1
FV Conf   : \t16.647\t(1)
ASD Conf  : \t4.465

FRAME \tX \tY \tW \tH\x20
000245 \t0.392 \t0.223 \t0.253 \t0.451\x20
000246 \t0.400 \t0.225 \t0.250 \t0.450\x20
000248 \t0.410 \t0.230 \t0.240 \t0.440\x20
"""

VOX1_TXT = """Identity  : \tEartha_Kitt
Reference : \t0bM4KDM64GE
Offset    : \t1
FV Conf   : \t17.865
ASD Conf  : \t3.771

FRAME \tX \tY \tW \tH\x20
000086 \t298 \t23 \t117 \t160\x20
000087 \t300 \t24 \t116 \t160\x20
"""


def touch(path, text: str = "") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


# --------------------------------------------------------------------------------------- Clip
def test_clip_dict_roundtrip_json():
    c = Clip("lrw/A/train/A_00001", "/x/A_00001.mp4", "lrw", "lrw", "train", 3, "A", "", "", "")
    d = json.loads(json.dumps(c.to_dict()))
    assert Clip.from_dict(d) == c
    short = Clip.from_dict({"clip_id": "f/a", "path": "/a", "source": "f", "kind": "folder",
                            "split": "val"})  # fmt: skip
    assert short.label == -1 and short.word == "" and short.boxes_kind == ""


def test_clip_validation():
    with pytest.raises(ValueError, match="split"):
        Clip("a/b", "/b", "a", "folder", "dev")
    with pytest.raises(ValueError, match="kind"):
        Clip("a/b", "/b", "a", "youtube", "train")
    with pytest.raises(ValueError, match="label"):
        Clip("a/b", "/b", "a", "folder", "train", label="3")
    with pytest.raises(ValueError, match="unknown keys"):
        Clip.from_dict({**Clip("a/b", "/b", "a", "folder", "train").to_dict(), "x": 1})
    assert type(Clip("a/b", "/b", "a", "folder", "train", label=np.int64(4)).label) is int
    with pytest.raises(ValueError, match="label"):
        Clip("a/b", "/b", "a", "folder", "train", label=True)


@pytest.mark.parametrize(
    "rel,keep_ext,expected",
    [
        ("W/train/W_00001.mp4", False, "s/W/train/W_00001"),
        ("a.b/c.d.mp4", False, "s/a.b/c.d"),
        ("a/.hidden", False, "s/a/.hidden"),
        ("x.mp4", True, "s/x.mp4"),
        ("./a//b.mp4", False, "s/a/b"),
        ("../x/../y.mp4", False, "s/_/x/_/y"),
        ("a/", False, "s/a"),
        ("", False, "s"),
        (".", True, "s"),
        ("caf\udcc3/\u00e9.mp4", False, "s/caf\\xc3/\u00e9"),
    ],
)
def test_clip_ids(rel, keep_ext, expected):
    from davs_model.preprocess.sources import _clip_id

    assert _clip_id("s", rel, keep_ext=keep_ext) == expected
    assert expected.encode("utf-8")  # always valid UTF-8


# ---------------------------------------------------------------------------------------- LRW
@pytest.fixture
def lrw(tmp_path):
    root = tmp_path / "lrw"
    for w in ("ABOUT", "ZERO", "BECAUSE"):
        for split, n in (("train", 3), ("val", 1), ("test", 2)):
            for i in range(1, n + 1):
                touch(root / w / split / f"{w}_{i:05d}.mp4")
                touch(root / w / split / f"{w}_{i:05d}.txt", "Duration: 0.5 seconds")
    touch(root / "README.txt")
    return root


def test_discover_lrw(lrw):
    clips = discover_lrw("lrw", lrw)
    assert len(clips) == 3 * 6
    assert [c.clip_id for c in clips] == sorted(c.clip_id for c in clips)
    c = clips[0]
    assert c.clip_id == "lrw/ABOUT/test/ABOUT_00001"
    assert c.path == str(lrw / "ABOUT" / "test" / "ABOUT_00001.mp4")
    assert (c.kind, c.source, c.split, c.word, c.label) == ("lrw", "lrw", "test", "ABOUT", 0)
    labels = {c.word: c.label for c in clips}
    assert labels == {"ABOUT": 0, "BECAUSE": 1, "ZERO": 2}  # sorted folders
    assert {c.split for c in clips} == {"train", "val", "test"}
    assert all(os.path.isfile(c.path) for c in clips)


def test_discover_lrw_splits_and_word_list(lrw, tmp_path, caplog):
    wl = tmp_path / "LRW_list.txt"
    wl.write_text("ZERO\nABOUT\nAFTERNOON\n")  # BECAUSE missing, AFTERNOON has no folder
    with caplog.at_level(logging.WARNING):
        clips = discover_lrw("x", lrw, splits=("val",), word_list=str(wl))
    assert "BECAUSE" in caplog.text
    assert [(c.word, c.label, c.split) for c in clips] == [("ABOUT", 1, "val"), ("ZERO", 0, "val")]
    with pytest.raises(ValueError, match="dev"):
        discover_lrw("x", lrw, splits=("dev",))
    with pytest.raises(FileNotFoundError, match="root"):
        discover_lrw("x", tmp_path / "nope")


# ----------------------------------------------------------------------------------- VoxCeleb
def test_discover_voxceleb2_with_boxes(tmp_path):
    root, boxes = tmp_path / "vox2", tmp_path / "vox2_txt"
    touch(root / "dev/mp4/id00012/21Uxsk56VDQ/00001.mp4")
    touch(root / "dev/mp4/id00012/21Uxsk56VDQ/00002.mp4")
    touch(root / "dev/mp4/id00015/abc_test-xy/00001.mp4")  # "_test" in a ytid is not a split
    touch(root / "test/mp4/id00017/01dfn2spqyE/00001.mp4")
    touch(root / "test/mp4/id00017/01dfn2spqyE/00001.txt", VOX2_TXT)  # next to the mp4
    touch(boxes / "dev/txt/id00012/21Uxsk56VDQ/00001.txt", VOX2_TXT)
    clips = discover_voxceleb("vox2", root, "voxceleb2", boxes_root=str(boxes))
    by = {c.clip_id: c for c in clips}
    assert list(by) == [
        "vox2/dev/mp4/id00012/21Uxsk56VDQ/00001",
        "vox2/dev/mp4/id00012/21Uxsk56VDQ/00002",
        "vox2/dev/mp4/id00015/abc_test-xy/00001",
        "vox2/test/mp4/id00017/01dfn2spqyE/00001",
    ]
    a, b, c, d = clips
    assert (a.split, a.speaker, a.kind, a.boxes_kind) == (
        "train",
        "id00012",
        "voxceleb2",
        "normalized",
    )
    assert a.boxes_path == str(boxes / "dev/txt/id00012/21Uxsk56VDQ/00001.txt")
    assert b.boxes_path == "" and b.boxes_kind == ""
    assert c.split == "train"
    assert d.split == "test" and d.boxes_path.endswith("mp4/id00017/01dfn2spqyE/00001.txt")


def test_discover_voxceleb_mp4_root_and_vox1(tmp_path):
    root = tmp_path / "vox2_mp4"
    touch(root / "mp4/id00012/21Uxsk56VDQ/00001.mp4")
    clips = discover_voxceleb("v", root, "voxceleb2", default_split="val")
    assert [(c.clip_id, c.split) for c in clips] == [("v/mp4/id00012/21Uxsk56VDQ/00001", "val")]
    v1 = tmp_path / "vox1"
    touch(v1 / "vox1_test_mp4/id10270/5r0dWxy17C8/00001.mp4")
    touch(v1 / "vox1_test_mp4/id10270/5r0dWxy17C8/00001.txt", VOX1_TXT)
    touch(v1 / "vox1_dev_mp4/id10001/1zcIwhmdeo4/00001.mp4")
    touch(v1 / "stray/00001.mp4")  # not id*/<ytid>/<n>.mp4: ignored
    clips = discover_voxceleb("v1", v1, "voxceleb1")
    assert [(c.speaker, c.split, c.boxes_kind) for c in clips] == [
        ("id10001", "train", ""),
        ("id10270", "test", "pixels360"),
    ]
    with pytest.raises(ValueError, match="kind"):
        discover_voxceleb("v", root, "voxceleb3")
    with pytest.raises(ValueError, match="dev"):
        discover_voxceleb("v", root, "voxceleb2", split_map={"dev": "dev"})


def test_read_voxceleb2_boxes(tmp_path):
    p = touch(tmp_path / "a.txt", VOX2_TXT)
    b = read_voxceleb_boxes(p, "voxceleb2", 224, 224)
    assert b.shape == (4, 4)  # frames 245..248, 247 missing
    np.testing.assert_allclose(b[0], [0.392 * 224, 0.223 * 224, 0.253 * 224, 0.451 * 224])
    assert np.isnan(b[2]).all() and not np.isnan(b[3]).any()
    b = read_voxceleb_boxes(p, "normalized", 640, 360, n_frames=6)
    assert b.shape == (6, 4) and np.isnan(b[4:]).all()
    np.testing.assert_allclose(b[1], [0.4 * 640, 0.225 * 360, 0.25 * 640, 0.45 * 360])
    assert read_voxceleb_boxes(p, "voxceleb2", 10, 10, n_frames=2).shape == (2, 4)


def test_read_voxceleb1_boxes(tmp_path):
    p = touch(tmp_path / "a.txt", VOX1_TXT)
    np.testing.assert_allclose(read_voxceleb_boxes(p, "voxceleb1", 640, 360)[0], [298, 23, 117, 160])
    b = read_voxceleb_boxes(p, "pixels360", 1280, 720)
    np.testing.assert_allclose(b, [[596, 46, 234, 320], [600, 48, 232, 320]])


def test_read_boxes_tolerant_header_and_errors(tmp_path):
    p = touch(tmp_path / "b.txt", "Identity : x\nFRAME X Y W H\n\n10 1 2 3 4\n11  5  6  7  8\n")
    np.testing.assert_allclose(read_voxceleb_boxes(p, "voxceleb1", 1, 360), [[1, 2, 3, 4], [5, 6, 7, 8]])
    bad = touch(tmp_path / "c.txt", "FRAME X Y W H\n10 1 2 3 4\n11 1 2 x 4\n")
    with pytest.raises(ValueError, match=r"c\.txt:3"):
        read_voxceleb_boxes(bad, "voxceleb2", 1, 1)
    nohead = touch(tmp_path / "d.txt", "10 1 2 3 4\n")
    with pytest.raises(ValueError, match="FRAME"):
        read_voxceleb_boxes(nohead, "voxceleb2", 1, 1)
    empty = touch(tmp_path / "e.txt", "FRAME X Y W H\n")
    assert read_voxceleb_boxes(empty, "voxceleb2", 1, 1).shape == (0, 4)
    assert np.isnan(read_voxceleb_boxes(empty, "voxceleb2", 1, 1, n_frames=3)).all()


# ------------------------------------------------------------------------- folder / manifest
def test_discover_folder(tmp_path):
    root = tmp_path / "mine"
    touch(root / "alice/talk1.mp4")
    touch(root / "alice/sub/talk2.MOV")
    touch(root / "bob/x.webm")
    touch(root / "top.mkv")
    touch(root / "clip.avi")
    touch(root / "clip.mp4")  # same stem as clip.avi: ids keep the extension
    touch(root / "notes.txt")
    touch(root / ".hidden.mp4")
    clips = discover_folder("mine", root, split="test")
    assert [(c.clip_id, c.speaker) for c in clips] == [
        ("mine/alice/sub/talk2", "alice"),
        ("mine/alice/talk1", "alice"),
        ("mine/bob/x", "bob"),
        ("mine/clip.avi", ""),
        ("mine/clip.mp4", ""),
        ("mine/top", ""),
    ]
    assert all(c.split == "test" and c.kind == "folder" and c.label == -1 for c in clips)
    with pytest.raises(ValueError, match="split"):
        discover_folder("mine", root, split="dev")


def test_discover_manifest(tmp_path):
    touch(tmp_path / "vids/a.mp4")
    tsv = tmp_path / "m.tsv"
    abs_b = str(tmp_path / "elsewhere/b.mp4")
    tsv.write_text(
        "path\tsplit\tlabel\tword\tspeaker\tclip_id\n"
        "vids/a.mp4\ttrain\t7\tABOUT\tspk1\t\n"
        f"{abs_b}\tval\t\t\t\tmy_b\n"
        "\t\t\t\t\t\n"
        "../up/c.mp4\ttest\t-1\t\t\t\n"
    )
    clips = discover_manifest("man", tsv)
    by = {c.clip_id: c for c in clips}
    assert sorted(by) == ["man/_/up/c", "man/my_b", "man/vids/a"]
    a = by["man/vids/a"]
    assert a.path == str(tmp_path / "vids/a.mp4") and os.path.isfile(a.path)
    assert (a.split, a.label, a.word, a.speaker, a.kind) == (
        "train",
        7,
        "ABOUT",
        "spk1",
        "manifest",
    )
    assert by["man/my_b"].path == abs_b and by["man/my_b"].label == -1
    assert by["man/_/up/c"].path == str(tmp_path.parent / "up/c.mp4")


def test_discover_manifest_minimal_columns(tmp_path):
    tsv = tmp_path / "m.tsv"
    tsv.write_text("split\tpath\nval\tx.mp4\n")
    (c,) = discover_manifest("m", tsv)
    assert (c.clip_id, c.split, c.label, c.word) == ("m/x", "val", -1, "")


@pytest.mark.parametrize(
    "text,match",
    [
        ("path\tlabel\nx.mp4\t1\n", r"m\.tsv:1: .*split"),
        ("path\tsplit\nx.mp4\tdev\n", r"m\.tsv:2: unknown split 'dev'"),
        ("path\tsplit\tlabel\nx.mp4\ttrain\t1\ny.mp4\ttrain\tthree\n", r"m\.tsv:3: label 'three'"),
        ("path\tsplit\nx.mp4\ttrain\nx.mov\ttrain\n", r"m\.tsv:3: clip id 'm/x' already"),
        ("path\tsplit\nx.mp4\ttrain\textra\n", r"m\.tsv:2: .*fields"),
        ("path\tsplit\tlabel\nx.mp4\ttrain\n", r"m\.tsv:2: .*fields"),
    ],
)
def test_discover_manifest_errors(tmp_path, text, match):
    tsv = tmp_path / "m.tsv"
    tsv.write_text(text)
    with pytest.raises(ValueError, match=match) as ei:
        discover_manifest("m", tsv)
    assert "fix" in str(ei.value)


# ------------------------------------------------------------------------------- non-UTF-8
def test_non_utf8_names(tmp_path):
    raw = os.fsencode(tmp_path) + b"/src/caf\xe9/clip\xff.mp4"
    try:
        os.makedirs(os.path.dirname(raw))
        open(raw, "wb").close()
    except OSError as e:  # pragma: no cover - file system refuses
        pytest.skip(f"file system refuses non-UTF-8 names: {e}")
    (c,) = discover_folder("f", tmp_path / "src")
    assert c.clip_id == "f/caf\\xe9/clip\\xff" and c.speaker == "caf\\xe9"
    c.clip_id.encode("utf-8")  # valid str
    assert os.path.isfile(c.path)  # the path still opens the file
    assert json.loads(json.dumps(c.to_dict()))["clip_id"] == c.clip_id
    lrw = os.fsencode(tmp_path) + b"/lrw/W\xe9/train/W\xe9_00001.mp4"
    os.makedirs(os.path.dirname(lrw))
    open(lrw, "wb").close()
    (c,) = discover_lrw("lrw", tmp_path / "lrw")
    assert c.word == "W\\xe9" and os.path.isfile(c.path)
