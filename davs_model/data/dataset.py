"""Training clips sampled from the HDF5 shards as the original's loader + ``forward`` do (DAVS_SPEC §1.2, §1.4).

Aligned items. A clip's bins and frames are paired on bin numbers: item k is MFCC bin row k with video frame
``frame_index[k]`` (bin l ↔ frame l, l ≥ 2), so only frames that have a bin are used (frames 2..26 for LRW's 29).
If the paired frames are not consecutive, the longest consecutive run is used. A clip needs at least
``max(disfc_length, 1 + stride·(pred_length − 1))`` items (LRW: max(20, 23) of 25); shorter clips are skipped
when the index is built, counted in the log, and never deleted (the original ``rmtree``'d them).

Sampling per item, n = number of aligned items (§1.4; every window start uniform over all valid starts):

- identity frame A: item a ~ U{0..n−1} (fixes the original's ``randint(0, 28)``, which raised 4/29 of the time);
- disentanglement window: items s..s+disfc_length−1, s ~ U{0..n−disfc_length};
- classification / contrastive: items p, p+stride, …, p+stride·(pred_length−1), p ~ U{0..n−span};
- generation targets: positions b..b+sequence_length−1 of that list, b ~ U{0..pred_length−sequence_length}.

Differences from the original, on purpose: it draws A, s, p and b once per *batch* (in the model's forward); here
they are drawn per clip (``gen_index`` per item). Its ``s = randint(0, 25−20−1)`` and ``p = randint(0, 1)`` leave
out the last valid start (s = 5, p = 2 for LRW's 25 items); here every valid start is drawn, which also carries
over to longer (e.g. VoxCeleb) clips.

Augmentation, one draw per clip, the same for all its frames (§1.2): ``train=True``: horizontal flip with p = 0.5
on the 260-px frame, then a 256-px crop at offsets (top, left), each ~ U{0..4}; ``train=False``: crop at (2, 2),
no flip. For ``image_size`` < 256 the 256 crop is then resized with ``F.interpolate(mode="bilinear",
antialias=True)`` (area-like downsampling; the original only ever trained at 256).

Randomness comes only from a per-item ``torch.Generator`` seeded from (seed, epoch, index) (``set_epoch``), so
resumed runs, DataLoader workers and DDP ranks draw exactly the same samples; the global RNGs are never used.
``torch.utils.data.default_collate`` batches the items (``clip_id`` becomes a list of str).
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from davs_model.data.frames import EVAL_CROP_OFFSET, MAX_CROP_OFFSET, crop_uint8, crop_view, image_tensor, to_float
from davs_model.io.shards import FRAME_INDEX, ShardError, ShardReader
from davs_model.networks.common import PAPER_IMAGE_SIZE, check_image_size

__all__ = ["ShardClipDataset", "aligned_run", "image_tensor", "item_seed"]

log = logging.getLogger(__name__)


def aligned_run(frame_index: np.ndarray) -> tuple[int, int]:
    """(first item, length) of the longest run of bins whose paired frames are consecutive (first run on ties)."""
    fi = np.asarray(frame_index)
    if len(fi) == 0:
        return 0, 0
    breaks = np.flatnonzero(np.diff(fi) != 1) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, len(fi)]
    k = int(np.argmax(ends - starts))
    return int(starts[k]), int(ends[k] - starts[k])


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one item, well mixed from (seed, epoch, index) by numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0])


class ShardClipDataset(Dataset):
    """All clips of the given shards, sampled for one DAVS training step each (see the module docstring).

    Args:
        shard_paths: HDF5 shards (``davs_model.io.shards``); every one must belong to ``split``.
        split: "train", "val" or "test", checked against each shard's ``split`` attribute.
        image_size: side S of the output frames (64, 128 or 256; the paper's is 256).
        pred_length: classification items per clip (12), taken ``stride`` (2) aligned items apart.
        sequence_length: generation targets (6), consecutive items of the classification list.
        disfc_length: consecutive frames for the disentanglement classifier dis-fc (20).
        train: random crop + flip (True) or centre crop (False).
        seed: base of the per-item seeds (with ``set_epoch``'s epoch and the item index).
        min_bins: skip clips with fewer aligned items; default (None) and minimum: what the windows need.
        uint8: images as stored, uint8 RGB (…,S,S,3), instead of float32 (…,3,S,S) in [0, 1]: the training
            loop's choice (a quarter of the bytes); :func:`image_tensor` converts them on the device.

    Item (images float32 in [0, 1] RGB, or uint8, see ``uint8``): ``identity`` (3,S,S); ``frames``
    (pred_length,3,S,S) the classification items; ``mfcc`` (pred_length,20,12) their MFCC windows (index-aligned
    with ``frames``); ``gen_index`` b (generation targets are ``frames[b:b+sequence_length]``); ``disfc_frames``
    (disfc_length,3,S,S); ``label`` int64 (−1: no word class); ``speaker`` int64 (index into ``speakers``, −1:
    none); ``clip_id`` str.
    """

    def __init__(
        self,
        shard_paths: Iterable[str | os.PathLike[str]],
        *,
        split: str,
        image_size: int = 256,
        pred_length: int = 12,
        stride: int = 2,
        sequence_length: int = 6,
        disfc_length: int = 20,
        train: bool,
        seed: int = 0,
        min_bins: int | None = None,
        uint8: bool = False,
    ):
        self.image_size = check_image_size(image_size)
        if min(pred_length, stride, sequence_length, disfc_length) < 1 or sequence_length > pred_length:
            raise ValueError(
                "need pred_length, stride, sequence_length, disfc_length >= 1 and sequence_length <= pred_length, "
                f"got {pred_length}, {stride}, {sequence_length}, {disfc_length}"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.pred_length, self.stride, self.sequence_length = pred_length, stride, sequence_length
        self.disfc_length, self.train, self.seed, self.epoch = disfc_length, bool(train), int(seed), 0
        self.span = 1 + stride * (pred_length - 1)  # aligned items covered by the classification list
        needed = max(disfc_length, self.span)
        if min_bins is not None and min_bins < needed:
            raise ValueError(f"min_bins={min_bins} is below what the windows need ({needed} aligned items)")
        self.min_bins = needed if min_bins is None else int(min_bins)
        self.split, self.shard_paths = split, [Path(p) for p in shard_paths]
        self.uint8 = bool(uint8)
        self._build_index()
        self._readers: list[ShardReader] | None = None
        self._readers_pid: int | None = None

    # ------------------------------------------------------------------ index

    def _build_index(self) -> None:
        """One row per usable clip: shard, clip index, first bin row, its frame, number of aligned items."""
        rows, labels, speakers, ids, skipped = [], [], [], [], []
        for s, path in enumerate(self.shard_paths):
            reader = ShardReader(path)
            try:
                if reader.attr("split") != self.split:
                    raise ShardError(f"{path}: shard of split {reader.attr('split')!r}, not {self.split!r}")
                for i, clip_id in enumerate(reader.clip_ids):
                    frame_index = reader.array(i, FRAME_INDEX)
                    first, n = aligned_run(frame_index)
                    if n < self.min_bins:
                        skipped.append(clip_id)
                        continue
                    rows.append((s, i, first, int(frame_index[first]) if n else 0, n))
                    meta = reader.meta(i, ("label", "speaker"))
                    labels.append(int(meta["label"]))
                    speakers.append(str(meta.get("speaker") or ""))
                    ids.append(clip_id)
            finally:
                reader.close()
        self._rows = np.asarray(rows, dtype=np.int64).reshape(-1, 5)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.speakers = sorted({s for s in speakers if s})  # speaker index k names self.speakers[k]
        lookup = {name: k for k, name in enumerate(self.speakers)}
        self._speaker_ids = np.asarray([lookup.get(s, -1) for s in speakers], dtype=np.int64)
        self.clip_ids, self.skipped_clip_ids = ids, skipped
        log.info(
            "%s: %d clips from %d shards; skipped %d with fewer than %d aligned frame/bin items",
            self.split, len(ids), len(self.shard_paths), len(skipped), self.min_bins,
        )  # fmt: skip
        if not ids:
            log.warning("%s: no usable clip in %d shards", self.split, len(self.shard_paths))

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def labels(self) -> np.ndarray:
        """Word label of each clip (−1: none), (N,) int64."""
        return self._labels

    @property
    def speaker_ids(self) -> np.ndarray:
        """Index into :attr:`speakers` of each clip's speaker (−1: none), (N,) int64."""
        return self._speaker_ids

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's draws; call before creating each epoch's DataLoader iterator (not with
        ``persistent_workers=True``, whose workers keep the dataset copy of the first epoch)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ reading

    def _reader(self, shard: int) -> ShardReader:
        """This process's reader: a forked worker closes the handles it inherited and opens its own."""
        if self._readers_pid != os.getpid():
            for r in self._readers or []:
                r.close()
            self._readers = [ShardReader(p) for p in self.shard_paths]
            self._readers_pid = os.getpid()
        return self._readers[shard]

    def close(self) -> None:
        for r in self._readers or []:
            r.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_readers": None, "_readers_pid": None}

    # ------------------------------------------------------------------ sampling

    def sample(self, index: int) -> dict:
        """The random choices for item ``index`` at the current epoch (aligned-item indices, crop, flip)."""
        index = operator.index(index) % len(self)
        n = int(self._rows[index, 4])
        g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))

        def uniform(high: int) -> int:  # U{0..high}
            return int(torch.randint(high + 1, (), generator=g))

        choice = {
            "identity": uniform(n - 1),
            "disfc_start": uniform(n - self.disfc_length),
            "pred_start": uniform(n - self.span),
            "gen_index": uniform(self.pred_length - self.sequence_length),
        }
        if self.train:
            top, left = uniform(MAX_CROP_OFFSET), uniform(MAX_CROP_OFFSET)
            choice.update(crop=(top, left), flip=bool(torch.rand((), generator=g) < 0.5))
        else:
            choice.update(crop=(EVAL_CROP_OFFSET, EVAL_CROP_OFFSET), flip=False)
        return choice

    def _read_frames(self, shard: int, clip: int, frames: np.ndarray) -> np.ndarray:
        """(k,260,260,3) uint8 RGB of the sorted, unique ``frames``: the reader reads contiguous slices and decodes
        only these frames."""
        return self._reader(shard).frames(clip, frames)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        index %= len(self)
        shard, clip, first_bin, first_frame, _ = (int(v) for v in self._rows[index])
        c = self.sample(index)
        pred_items = c["pred_start"] + self.stride * np.arange(self.pred_length)
        disfc_items = c["disfc_start"] + np.arange(self.disfc_length)
        # each needed frame is read and decoded once
        items = np.unique(np.concatenate([[c["identity"]], pred_items, disfc_items]))
        raw = self._read_frames(shard, clip, first_frame + items)
        position = {int(item): k for k, item in enumerate(items)}
        if self.uint8 or self.image_size == PAPER_IMAGE_SIZE:
            # crop + flip once, then each output is a gather of contiguous frames (numpy: ~20× torch); float items
            # are these bytes scaled by image_tensor, as the training step scales uint8 items on its device
            frames_u8 = crop_uint8(raw, c["crop"], c["flip"], self.image_size)

            def pick(its) -> torch.Tensor:
                u8 = torch.from_numpy(frames_u8[[position[int(i)] for i in its]])
                return u8 if self.uint8 else image_tensor(u8, "cpu")

        else:  # float items at a reduced size: resize each frame once (in float), then copy the small results
            images = to_float(crop_view(raw, c["crop"], c["flip"]), self.image_size)

            def pick(its) -> torch.Tensor:
                return images[[position[int(i)] for i in its]]

        mfcc = self._reader(shard).mfcc(clip)[first_bin + pred_items]
        return {
            "identity": pick([c["identity"]])[0],
            "frames": pick(pred_items),
            "mfcc": torch.from_numpy(mfcc.astype(np.float32)),
            "gen_index": c["gen_index"],
            "disfc_frames": pick(disfc_items),
            "label": torch.tensor(self._labels[index], dtype=torch.int64),
            "speaker": torch.tensor(self._speaker_ids[index], dtype=torch.int64),
            "clip_id": self.clip_ids[index],
        }
