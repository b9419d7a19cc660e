"""Full-frame paste-back: the inverse warp lands where alignment took each point, only the masked face region
changes (bit-exact elsewhere), and the rendered mp4 has the photo's (even) size."""

from __future__ import annotations

import wave

import av
import cv2
import numpy as np
import pytest
import torch

from davs_model.align import anchor_transform, warp_aligned
from davs_model.face import FaceLandmarker
from davs_model.model import DAVS
from davs_model.rendering import inputs
from davs_model.rendering.pasteback import MAX_SIDE, PasteBack, cap_size, crop_to_photo, photo_to_crop
from davs_model.rendering.render import render
from davs_model.training.config import ModelConfig

ANCHORS = np.array([[150.3, 160.8], [231.1, 150.2], [196.4, 241.7]])  # a tilted face: left eye, right eye, mouth
BLOBS = np.array([[160.4, 190.7], [205.2, 215.9], [178.8, 252.3]])  # photo points that land inside the crop


def blob_photo(h: int = 360, w: int = 400) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for x, y in BLOBS:
        img += 200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0**2))
    return np.repeat(np.rint(img)[..., None], 3, axis=2).astype(np.uint8)


def centroid(img: np.ndarray, near: np.ndarray, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float64)
    weight = img.astype(np.float64) * (((xx - near[0]) ** 2 + (yy - near[1]) ** 2) < radius**2)
    return np.array([(weight * xx).sum(), (weight * yy).sum()]) / weight.sum()


@pytest.mark.parametrize("size", [256, 64])
def test_a_point_aligned_and_mapped_back_lands_within_half_a_pixel(size):
    M = anchor_transform(ANCHORS)
    aligned = warp_aligned(blob_photo(), M)[inputs.CROP, inputs.CROP, ::-1]  # as the identity is aligned
    crop = (inputs.to_model_size(aligned, size)[0] * 255).numpy()  # one channel, at the model's size
    to_crop, back = photo_to_crop(M, size), crop_to_photo(M, size)
    for point in BLOBS:
        expected = to_crop @ np.append(point, 1)
        found = centroid(crop, expected, radius=12 * size / 256)
        returned = back @ np.append(found, 1)
        assert np.linalg.norm(returned - point) < 0.5, (point, returned)
    assert np.allclose(back @ np.append(to_crop @ [10.0, 20.0, 1], 1), [10, 20])


def test_paste_back_changes_the_face_region_and_nothing_else():
    photo = np.random.default_rng(0).integers(0, 256, (361, 403, 3), dtype=np.uint8)
    M = anchor_transform(ANCHORS)
    paste = PasteBack(photo, M, 64)
    before = photo.copy()
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    out = paste(red)
    assert np.array_equal(photo, before)  # the photo itself is untouched
    assert out.shape == photo.shape and out.dtype == np.uint8
    support = np.zeros(photo.shape[:2], bool)
    support[paste.y0 : paste.y1, paste.x0 : paste.x1] = paste.support
    assert np.array_equal(out[~support], photo[~support])  # byte-identical outside the mask
    mouth = np.rint(crop_to_photo(M, 256) @ [128, 184, 1]).astype(int)  # below the aligned mouth centre
    assert tuple(out[mouth[1], mouth[0]]) == (0, 0, 255)  # fully replaced (BGR red) at the mask's core
    changed = np.any(out != photo, axis=2)
    assert changed.sum() > 0.8 * support.sum()
    eyes = np.rint(crop_to_photo(M, 256) @ np.array([[91, 114, 1], [169, 114, 1]]).T).astype(int)
    assert not support[eyes[1], eyes[0]].any()  # the eyes keep the photo


def test_large_photos_are_capped():
    big = np.zeros((2000, 3000, 3), np.uint8)
    assert cap_size(big).shape == (853, MAX_SIDE, 3)
    small = np.zeros((300, 200, 3), np.uint8)
    assert cap_size(small) is small


def test_rendered_full_frame_mp4(tmp_path):
    import skimage.data

    photo = skimage.data.astronaut()[:419, :511, ::-1]  # odd size → padded to 420×512 for yuv420p
    cv2.imwrite(str(tmp_path / "p.png"), photo)
    x = (np.random.default_rng(0).standard_normal(int(0.8 * 16000)) * 3000).astype(np.int16)
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(x.tobytes())
    torch.manual_seed(0)
    model = DAVS(ModelConfig(image_size=64, width=1 / 16, n_words=6), with_discriminators=False).eval()
    landmarker = FaceLandmarker(upsample=1)
    out = tmp_path / "o.mp4"
    result = render(
        model, tmp_path / "p.png", out, audio=tmp_path / "s.wav", finetune_steps=0, landmarker=landmarker
    )
    assert result.n_frames == inputs.count_bins(x)
    with av.open(str(out)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.average_rate == 25 and (v.codec_context.width, v.codec_context.height) == (512, 420)
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(v)]
        audio_s = float(a.duration * a.time_base)
    assert len(frames) == result.n_frames
    assert abs(audio_s - len(frames) / 25) <= 1 / 25
    ident = inputs.load_identity_frame(tmp_path / "p.png", landmarker)
    paste = PasteBack(ident.photo_bgr, ident.transform, 64)
    diff = np.abs(frames[len(frames) // 2][:419, :511].astype(int) - photo).mean(axis=2)
    outside = np.ones(photo.shape[:2], bool)
    outside[paste.y0 - 8 : paste.y1 + 8, paste.x0 - 8 : paste.x1 + 8] = False
    inside = np.zeros(photo.shape[:2], bool)
    inside[paste.y0 : paste.y1, paste.x0 : paste.x1] = paste.mask[..., 0] > 0.99
    assert diff[outside].mean() < 3  # the photo, up to H.264
    assert diff[inside].mean() > 10  # an untrained model's face: far from the photo's


def test_bf16_generation_stays_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    model = DAVS(ModelConfig(image_size=64, width=1 / 16, n_words=6), with_discriminators=False).eval()
    landmarker = FaceLandmarker(upsample=1)
    frames = {}
    for bf16 in (False, True):
        out = tmp_path / f"{bf16}.mp4"
        kw = dict(finetune_steps=0, landmarker=landmarker, paste_back=False, bf16=bf16)
        render(model, "demo", out, audio="demo", **kw)
        with av.open(str(out)) as c:
            frames[bf16] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])
    assert frames[True].shape == frames[False].shape
    assert np.abs(frames[True].astype(int) - frames[False]).mean() < 1.5
