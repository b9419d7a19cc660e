"""Tests of davs_model.data.dataset on tiny synthetic shards whose pixels and MFCCs encode their own numbers.

Frames (RGB): R = 3·frame number, G = row, B = column (both clipped at 255), so the frame number, crop offsets and
flip of any output image can be read back; every MFCC bin is filled with its bin number.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from davs_model.data.dataset import ShardClipDataset, aligned_run, image_tensor, item_seed
from davs_model.io.shards import ClipRecord, ShardError, ShardWriter

S = 260
T, N_BINS = 29, 25  # LRW: 29 frames, bins 2..26
STEP = 3  # R = STEP·frame number: frames 0..85
LONG_ENOUGH = 23  # 1 + 2·(12 − 1) for the default windows


def coded_frames(t: int) -> np.ndarray:
    """(t,260,260,3) uint8 BGR: B = column, G = row (clipped at 255), R = STEP·frame number."""
    coord = np.minimum(np.arange(S), 255).astype(np.uint8)
    frames = np.empty((t, S, S, 3), np.uint8)
    frames[..., 0] = coord[None, None, :]
    frames[..., 1] = coord[None, :, None]
    frames[..., 2] = (STEP * np.arange(t))[:, None, None]
    return frames


def record(clip_id: str, label: int, t: int = T, n_bins: int = N_BINS, frame_index=None) -> ClipRecord:
    """Bins 2..n_bins+1 paired with ``frame_index`` (default: bin l with frame l); MFCC row k = its frame no."""
    numbers = np.arange(2, 2 + n_bins)
    frame_index = numbers.copy() if frame_index is None else np.asarray(frame_index)
    mfcc = np.broadcast_to(frame_index[:, None, None], (n_bins, 20, 12)).astype(float)
    return ClipRecord(
        clip_id=clip_id, source="lrw", split="train", label=label, word="W", speaker="",
        frames_bgr=coded_frames(t), mfcc=mfcc,
        bin_numbers=numbers, frame_index=frame_index, transforms=np.zeros((t, 2, 3)),
        detected=np.ones(t, bool), input_fps=25.0,
    )  # fmt: skip


def write(path, records, image_format="raw", split="train"):
    with ShardWriter(path, split=split, shard=0, image_format=image_format) as w:
        for r in records:
            w.add(r)
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    a = write(d / "000.h5", [record("a0", 0), record("short", 1, t=20, n_bins=15), record("a1", 1, n_bins=24)])
    b = write(d / "001.h5", [record("b0", 7), record("b1", 8, n_bins=LONG_ENOUGH)])
    return [a, b]


def make(shards, **kw):
    kw = {"split": "train", "train": True, **kw}
    return ShardClipDataset(shards, **kw)


def frame_no(img: torch.Tensor) -> int:
    """Frame number from an (3,256,256) output image (R channel)."""
    r = torch.round(img[0] * 255)
    assert torch.all(r == r[0, 0])
    return int(r[0, 0]) // STEP


def crop_and_flip(img: torch.Tensor) -> tuple[int, int, bool]:
    """(top, left, flipped) of a 256 output image: G at row 0 is ``top``; B reveals column order and ``left``."""
    g, b = torch.round(img[1] * 255), torch.round(img[2] * 255)
    top = int(g[0, 0])
    flipped = bool(b[0, 0] > b[0, -1])
    left = 4 - int(b[0, -1]) if flipped else int(b[0, 0])
    return top, left, flipped


def all_images(item) -> list[torch.Tensor]:
    return [item["identity"], *item["frames"], *item["disfc_frames"]]


# ----------------------------------------------------------------------------- index


def test_index_skips_short_clips_and_logs(shards, caplog):
    with caplog.at_level(logging.INFO, logger="davs_model.data.dataset"):
        ds = make(shards)
    assert ds.clip_ids == ["a0", "a1", "b0", "b1"] and len(ds) == 4
    assert ds.skipped_clip_ids == ["short"] and ds.min_bins == LONG_ENOUGH
    assert "skipped 1 with fewer than 23" in caplog.text
    assert all(p.is_file() for p in shards)  # never deleted


def test_min_bins(shards):
    assert make(shards, min_bins=25).clip_ids == ["a0", "b0"]
    with pytest.raises(ValueError, match="min_bins"):
        make(shards, min_bins=22)


def test_split_is_checked(shards):
    with pytest.raises(ShardError, match="split"):
        make(shards, split="val")


def test_bad_window_settings_raise(shards):
    with pytest.raises(ValueError):
        make(shards, sequence_length=13)
    with pytest.raises(ValueError):
        make(shards, image_size=100)


def test_aligned_run():
    assert aligned_run(np.arange(2, 27)) == (0, 25)
    assert aligned_run(np.array([2, 3, 5, 6, 7, 9])) == (2, 3)
    assert aligned_run(np.array([], int)) == (0, 0)


# ----------------------------------------------------------------------------- item content


def test_frames_and_bins_are_index_aligned_with_the_windows(shards):
    ds = make(shards)
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            n = N_BINS - 1 if ds.clip_ids[i] == "a1" else (LONG_ENOUGH if ds.clip_ids[i] == "b1" else N_BINS)
            assert item["frames"].shape == (12, 3, 256, 256) and item["frames"].dtype == torch.float32
            assert item["mfcc"].shape == (12, 20, 12) and item["mfcc"].dtype == torch.float32
            assert item["disfc_frames"].shape == (20, 3, 256, 256) and item["identity"].shape == (3, 256, 256)
            pred = [frame_no(f) for f in item["frames"]]
            bins = item["mfcc"][:, 0, 0].tolist()
            assert torch.all(item["mfcc"] == item["mfcc"][:, :1, :1])
            assert pred == bins  # frame l with bin l
            assert np.all(np.diff(pred) == 2) and 2 <= pred[0] <= 2 + n - LONG_ENOUGH
            disfc = [frame_no(f) for f in item["disfc_frames"]]
            assert np.all(np.diff(disfc) == 1) and 2 <= disfc[0] <= 2 + n - 20
            assert 2 <= frame_no(item["identity"]) <= n + 1  # only frames that have a bin
            assert 0 <= item["gen_index"] <= 6
            assert item["label"].dtype == torch.int64
            assert item["label"].item() == {"a0": 0, "a1": 1, "b0": 7, "b1": 8}[item["clip_id"]]
            assert item["clip_id"] == ds.clip_ids[i]
            for x in all_images(item):
                assert x.min() >= 0.0 and x.max() <= 1.0


def test_all_valid_window_starts_are_drawn(shards):
    ds = make(shards)
    firsts, identities, gens = set(), set(), set()
    for epoch in range(60):
        ds.set_epoch(epoch)
        c = ds.sample(0)
        firsts.add(c["pred_start"]), identities.add(c["identity"]), gens.add(c["gen_index"])
    assert firsts == {0, 1, 2} and gens == set(range(7)) and identities <= set(range(25))
    assert len(identities) > 15


def test_train_crop_and_flip_are_per_clip(shards):
    ds = make(shards)
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            params = {crop_and_flip(x) for x in all_images(item)}
            assert len(params) == 1  # one crop and one flip for the whole clip
            top, left, flipped = params.pop()
            assert 0 <= top <= 4 and 0 <= left <= 4
            assert (top, left, flipped) == (*ds.sample(i)["crop"], ds.sample(i)["flip"])
            seen.add((top, left, flipped))
    assert {f for *_, f in seen} == {True, False}
    assert len({(t, x) for t, x, _ in seen}) > 8


def test_eval_is_centre_crop_without_flip(shards):
    ds = make(shards, train=False)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            assert {crop_and_flip(x) for x in all_images(ds[i])} == {(2, 2, False)}


def test_small_image_size_resizes_the_256_crop(shards):
    big, small = make(shards), make(shards, image_size=64)
    a, b = big[2], small[2]
    assert b["frames"].shape == (12, 3, 64, 64) and b["disfc_frames"].shape == (20, 3, 64, 64)
    expected = F.interpolate(a["frames"], size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(b["frames"], expected.clamp(0, 1), atol=1e-6)
    assert torch.equal(a["mfcc"], b["mfcc"])


def test_long_clip_with_a_gap_uses_its_longest_aligned_run(tmp_path):
    """VoxCeleb-like: 80 frames, bins paired with frames 2..11 and 15..74 (a gap): only 15..74 is used, and the
    far-apart identity frame exercises the block-wise reading of raw shards."""
    fi = np.r_[np.arange(2, 12), np.arange(15, 75)]
    ds = make([write(tmp_path / "000.h5", [record("long", 2, t=80, n_bins=len(fi), frame_index=fi)])])
    identities = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        item = ds[0]
        pred = [frame_no(f) for f in item["frames"]]
        assert pred == item["mfcc"][:, 0, 0].tolist() and np.all(np.diff(pred) == 2) and 15 <= pred[0] <= 52
        disfc = [frame_no(f) for f in item["disfc_frames"]]
        assert np.all(np.diff(disfc) == 1) and 15 <= disfc[0] <= 55
        identities.add(frame_no(item["identity"]))
    assert identities <= set(range(15, 75)) and len(identities) > 4


def test_jpeg_shards(tmp_path):
    ds = make([write(tmp_path / "000.h5", [record("j0", 3)], image_format="jpeg")], train=False)
    item = ds[0]
    pred = [round(float(f[0].mean()) * 255 / STEP) for f in item["frames"]]
    assert pred == item["mfcc"][:, 0, 0].tolist()


# ----------------------------------------------------------------------------- randomness


def assert_items_equal(x, y):
    assert x.keys() == y.keys()
    for k in x:
        if isinstance(x[k], torch.Tensor):
            assert torch.equal(x[k], y[k]), k
        else:
            assert x[k] == y[k], k


def test_deterministic_given_seed_epoch_index(shards):
    a, b = make(shards, seed=3), make(shards, seed=3)
    a.set_epoch(5), b.set_epoch(5)
    for i in (1, 3):
        assert_items_equal(a[i], b[i])
        assert_items_equal(a[i], a[i])
    assert item_seed(3, 5, 1) == item_seed(3, 5, 1) != item_seed(3, 5, 2)
    # no global RNG is used or disturbed
    torch.manual_seed(0)
    np.random.seed(0)
    state = torch.get_rng_state()
    a[0]
    assert torch.equal(state, torch.get_rng_state())


def test_different_across_epochs_and_seeds(shards):
    ds = make(shards)
    draws = []
    for epoch in range(5):
        ds.set_epoch(epoch)
        draws.append(ds.sample(0))
    assert len({repr(d) for d in draws}) == 5
    ds.set_epoch(0)
    assert repr(make(shards, seed=1).sample(0)) != repr(ds.sample(0))
    assert not torch.equal(make(shards, seed=1)[0]["disfc_frames"], ds[0]["disfc_frames"])


def test_pickles_after_use(shards):
    ds = make(shards)
    ds.set_epoch(2)
    item = ds[1]  # opens a shard handle
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._readers is None and clone.epoch == 2
    assert_items_equal(clone[1], item)
    ds.close()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_give_the_same_batches(shards, context):
    """Forked workers inherit the main process's open handle (and must not use it); spawned ones unpickle."""
    ds = make(shards)
    ds.set_epoch(4)
    ds[0]  # the main process has an open handle before the workers start

    def batches(num_workers):
        ctx = {"multiprocessing_context": context} if num_workers else {}
        return list(DataLoader(ds, batch_size=3, shuffle=False, num_workers=num_workers, **ctx))

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 2
    for x, y in zip(serial, parallel, strict=True):
        assert x["clip_id"] == y["clip_id"]
        assert x["gen_index"].dtype == torch.int64 and x["label"].shape == (len(x["clip_id"]),)
        assert_items_equal(x, y)


@pytest.mark.parametrize("size", [256, 64])
def test_uint8_items_are_the_float_items_in_bytes(shards, size):
    floats, bytes_ = make(shards, image_size=size, seed=3), make(shards, image_size=size, seed=3, uint8=True)
    a, b = floats[1], bytes_[1]
    for key in ("identity", "frames", "disfc_frames"):
        assert b[key].dtype == torch.uint8 and b[key].movedim(-1, -3).shape == a[key].shape
        back = image_tensor(b[key], "cpu")
        tol = 0 if size == 256 else 0.5 / 255 + 1e-6  # resized frames are rounded to bytes once
        torch.testing.assert_close(back, a[key], rtol=0, atol=tol)
    assert torch.equal(a["mfcc"], b["mfcc"]) and a["gen_index"] == b["gen_index"]
    assert image_tensor(a["frames"], "cpu", torch.float64).dtype == torch.float64  # floats are only cast
