"""`davs mfcc` and `davs align` as a user runs them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from davs_model.align import anchor_transform, output_points
from davs_model.audio import mfcc_bins
from davs_model.cli import main
from davs_model.face import FaceLandmarker, anchors_from_68
from davs_model.io.media import read_audio
from davs_model.io.writer import write_mp4


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (rng.normal(0, 2000, n) * envelope).astype(np.int16)


def test_mfcc_cli_on_a_video_writes_bins_the_original_can_read(tmp_path, capsys):
    frames = [np.full((64, 64, 3), 100, np.uint8)] * 50  # 2.0 s at 25 fps
    audio = _speechlike(32000)
    video = tmp_path / "clip with space.mp4"
    write_mp4(video, frames, fps=25, audio=audio, sample_rate=16000)
    out = tmp_path / "bins"
    assert main(["mfcc", str(video), str(out)]) == 0
    files = sorted(out.glob("*.bin"), key=lambda p: int(p.stem))
    # savemfcc.m: num_bins = 50 frames → bins 2 … 46
    assert [int(p.stem) for p in files] == list(range(2, 47))
    expected = mfcc_bins(read_audio(video, 16000, max_duration_s=2.0))
    for k, path in enumerate(files):
        assert path.stat().st_size == 240 * 8
        np.testing.assert_array_equal(np.fromfile(path).reshape(20, 12), expected[k])
    assert "wrote 45 windows" in capsys.readouterr().out


def test_mfcc_cli_trim_end_and_errors(tmp_path, capsys):
    import wave

    wav = tmp_path / "speech.wav"
    with wave.open(str(wav), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(16000)
        fh.writeframes(_speechlike(20480).tobytes())
    assert main(["mfcc", str(wav), str(tmp_path / "lrw"), "--trim-end", "600"]) == 0
    assert (tmp_path / "lrw/26.bin").exists()
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert main(["mfcc", str(empty), str(tmp_path / "x")]) == 2
    assert "empty.wav" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_align_cli_puts_the_anchors_on_the_template(tmp_path):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "aligned.png"
    matrix = tmp_path / "m.txt"
    assert main(["align", str(photo), str(out), "--matrix", str(matrix)]) == 0
    aligned = cv2.imread(str(out))
    assert aligned.shape == (260, 260, 3)
    # landmarks found again on the aligned face land near the DAVS template positions
    landmarker = FaceLandmarker(upsample=1)
    faces = landmarker.detect(aligned)
    assert faces
    anchors = anchors_from_68(landmarker.landmarks(aligned, faces[0]))
    template = np.array([[93.13, 116.42], [170.75, 116.42], [131.94, 190.15]])
    iod = 170.75 - 93.13
    assert np.linalg.norm(anchors - template, axis=1).max() < 0.08 * iod
    # the saved matrix is the original's 3-point Procrustes fit of the photo's anchors
    image = cv2.imread(str(photo))
    photo_anchors = anchors_from_68(landmarker.landmarks(image, landmarker.detect(image)[0]))
    m = np.loadtxt(matrix)
    np.testing.assert_allclose(m, anchor_transform(photo_anchors, duplicate_eyes=False), atol=1e-6)
    assert np.linalg.norm(output_points(m, photo_anchors) - template, axis=1).max() < 0.05 * iod


@pytest.mark.parametrize("content", [b"", b"not an image"])
def test_align_cli_rejects_unreadable_images(tmp_path, content, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    assert main(["align", str(bad), str(tmp_path / "o.png")]) == 2
    assert "bad.jpg" in capsys.readouterr().err


def test_align_cli_reports_no_face(tmp_path, capsys):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    assert main(["align", str(blank), str(tmp_path / "o.png")]) == 1
    assert "no face" in capsys.readouterr().err
