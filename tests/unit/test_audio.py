"""Tests of davs_model.audio: the numpy port of the DAVS authors' MATLAB MFCC (spec §1.3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from davs_model import audio

SPEC_EDGES_HZ = [
    300.0, 411.6, 535.7, 673.7, 827.0, 997.5, 1187.0, 1397.6,
    1631.8, 1892.1, 2181.4, 2503.1, 2860.7, 3258.1, 3700.0,
]  # fmt: skip
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
SPEECH_DIR = FIXTURES / "speech"


def _signal(n: int, seed: int = 0) -> np.ndarray:
    """Random int16-range float signal (max|x| > 1, so no 2^15 scaling)."""
    return np.random.default_rng(seed).normal(0.0, 3000.0, n)


# ----------------------------------------------------------------------------- building blocks


def test_edge_frequencies_match_spec() -> None:
    c = audio.cutoff_frequencies()
    assert c.shape == (15,)
    np.testing.assert_allclose(c, SPEC_EDGES_HZ, atol=0.051)
    # uniformly spaced on mel = 1127 ln(1 + f/700)
    mel = 1127 * np.log1p(c / 700)
    np.testing.assert_allclose(np.diff(mel), np.diff(mel)[0], rtol=1e-10)


def test_filterbank_peak_one_triangles() -> None:
    h = audio.filterbank(16000)
    assert h.shape == (13, 257)
    f = np.linspace(0, 8000, 257)
    c = audio.cutoff_frequencies()
    for m in range(13):
        lo, mid, hi = c[m], c[m + 1], c[m + 2]
        ideal = np.clip(np.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)), 0, None)
        np.testing.assert_allclose(h[m], ideal, atol=1e-12)  # peak-1, not area-normalised
        outside = (f < lo) | (f > hi)
        assert np.all(h[m, outside] == 0)
        assert np.all(h[m, ~outside] > 0)
        assert h[m].max() <= 1.0
        # the grid bin nearest the centre is within one grid step (31.25 Hz) of the peak value 1
        k = int(np.argmin(np.abs(f - mid)))
        assert h[m, k] >= 1 - 31.25 / min(mid - lo, hi - mid)
    # nothing below 300 Hz or above 3700 Hz
    assert np.all(h[:, f < 300] == 0) and np.all(h[:, f > 3700] == 0)


def test_dct_matrix_by_hand() -> None:
    d = audio.dct_matrix()
    assert d.shape == (13, 13)
    s = math.sqrt(2 / 13)
    for n, m in [(0, 1), (0, 13), (1, 1), (1, 7), (3, 5), (12, 13), (7, 2)]:
        assert d[n, m - 1] == pytest.approx(s * math.cos(n * math.pi * (m - 0.5) / 13), abs=1e-15)
    assert d[0, 0] == pytest.approx(math.sqrt(2 / 13))  # not the orthonormal sqrt(1/13)
    assert abs(d[1, 6]) < 1e-15  # cos(pi/2)


def test_lifter_by_hand() -> None:
    lift = audio.lifter()
    assert lift.shape == (13,)
    assert lift[0] == 1.0
    assert lift[11] == pytest.approx(12.0)  # 1 + 11 sin(pi/2)
    for n in (1, 5, 12):
        assert lift[n] == pytest.approx(1 + 11 * math.sin(math.pi * n / 22), rel=1e-15)


# ----------------------------------------------------------------------------- frames and bins


@pytest.mark.parametrize("n", [400, 559, 560, 4000, 20480])
def test_frame_count(n: int) -> None:
    assert audio.mfcc_frames(_signal(n)).shape == ((n - 400) // 160 + 1, 12)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (3839, 0),  # num_bins = 5 -> no bin
        (3840, 1),  # num_bins = 6 -> bin 2 only
        (4480, 2),
        (16000, 20),  # 1 s -> 25 frames -> bins 2..21
        (18560, 23),  # MATLAB's floor(18560/16000*25) = 28 (float), not 29
        (19880, 26),  # LRW after trimming
        (66000, 98),  # demo 0572_0019_0003: 2.bin .. 99.bin (issue #10)
    ],
)
def test_bin_count_and_numbering(n: int, expected: int) -> None:
    x = _signal(n, seed=n)
    bins = audio.mfcc_bins(x)
    frames = audio.mfcc_frames(x)
    num_bins = math.floor(n / 16000 * 25)
    assert bins.shape == (expected, 20, 12)
    assert expected == max(num_bins - 5, 0)
    numbers = audio.bin_numbers(len(bins))
    np.testing.assert_array_equal(numbers, np.arange(2, 2 + expected))
    for k, l_ in enumerate(numbers):
        start = 4 * (l_ - 2)  # MATLAB columns 4l-7 .. 4l+12 (1-based)
        assert start + 20 <= len(frames)
        np.testing.assert_array_equal(bins[k], frames[start : start + 20])


def test_too_short_raises_and_no_bin_gives_empty() -> None:
    with pytest.raises(ValueError, match="too short"):
        audio.mfcc_frames(np.zeros(0))
    with pytest.raises(ValueError, match="too short"):
        audio.mfcc_bins(_signal(399))
    assert audio.mfcc_bins(_signal(400)).shape == (0, 20, 12)
    assert audio.mfcc_bins(_signal(3000)).shape == (0, 20, 12)


def test_invalid_inputs() -> None:
    x = _signal(4000)
    x[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        audio.mfcc_bins(x)
    for sr in (0, -16000):
        with pytest.raises(ValueError, match="sample_rate"):
            audio.mfcc_frames(_signal(4000), sample_rate=sr)
    with pytest.raises(ValueError, match="trim_end"):
        audio.mfcc_bins(_signal(4000), trim_end=-1)
    with pytest.raises(ValueError):
        audio.mfcc_frames(np.zeros((10, 10, 2)))


def test_first_channel_used() -> None:
    left, right = _signal(5000, 1), _signal(5000, 2)
    stereo = np.stack([left, right], axis=1)
    np.testing.assert_array_equal(audio.mfcc_bins(stereo), audio.mfcc_bins(left))


def test_float_input_scaled_like_int16() -> None:
    pcm = np.clip(_signal(8000, 3), -32768, 32767).astype(np.int16)
    as_float = pcm.astype(np.float64) / 2**15  # what MATLAB's audioread returns
    ref = audio.mfcc_bins(pcm)
    assert ref.shape[0] > 0
    np.testing.assert_array_equal(audio.mfcc_bins(as_float), ref)
    np.testing.assert_array_equal(audio.mfcc_bins(pcm.astype(np.float64)), ref)
    # the rule is applied to float input with max|x| <= 1 only; int16 is used as-is
    np.testing.assert_array_equal(audio._prepare(as_float, 16000), pcm.astype(np.float64))
    np.testing.assert_array_equal(audio._prepare(pcm, 16000), pcm.astype(np.float64))
    loud = as_float * (1.5 / np.abs(as_float).max())
    np.testing.assert_array_equal(audio._prepare(loud, 16000), loud)
    tiny = np.array([1, -1, 0] * 200, dtype=np.int16)
    np.testing.assert_array_equal(audio._prepare(tiny, 16000), tiny.astype(np.float64))
    # c1..c12 are invariant to a global gain (the DCT rows n >= 1 sum to zero), so the scaling
    # only matters for bit-level parity with MATLAB
    np.testing.assert_allclose(audio.mfcc_bins(loud), audio.mfcc_bins(loud * 2**15), atol=1e-9)


def test_trim_end_lrw() -> None:
    x = _signal(20480, 4)  # a 1.28 s LRW clip at 16 kHz
    bins = audio.mfcc_bins(x, trim_end=600)
    assert bins.shape[0] >= 25  # rows 0..24 are bins 2..26, what save_mfccs.m writes
    np.testing.assert_array_equal(audio.bin_numbers(25), np.arange(2, 27))
    frames = audio.mfcc_frames(x[:-600])
    assert len(frames) == 122  # save_mfccs.m reshapes mfcc.bin to 13x122
    np.testing.assert_array_equal(bins[24], frames[96:116])  # bin 26 = columns 97..116
    np.testing.assert_array_equal(bins, audio.mfcc_bins(x[:-600]))
    # trimming the end only changes how many bins there are, not their values
    untrimmed = audio.mfcc_bins(x)
    assert untrimmed.shape[0] == 27 and bins.shape[0] == 26
    np.testing.assert_array_equal(untrimmed[:26], bins)
    with pytest.raises(ValueError, match="too short"):
        audio.mfcc_bins(_signal(900), trim_end=600)


# ----------------------------------------------------------------------------- naive reference


def _naive_mfcc_bins(x: list[float], fs: int = 16000) -> np.ndarray:
    """Straight from mfcc.m / trifbank.m / savemfcc.m, one frame and one value at a time."""
    if max(abs(v) for v in x) <= 1:
        x = [v * 32768 for v in x]
    y = [x[0]] + [x[i] - 0.97 * x[i - 1] for i in range(1, len(x))]
    nw, ns, nfft, n_filt, n_cep = 400, 160, 512, 13, 13
    kk = nfft // 2 + 1
    win = [0.54 - 0.46 * math.cos(2 * math.pi * n / (nw - 1)) for n in range(nw)]
    mel_lo, mel_hi = 1127 * math.log(1 + 300 / 700), 1127 * math.log(1 + 3700 / 700)
    c = [700 * math.exp((mel_lo + i * (mel_hi - mel_lo) / 14) / 1127) - 700 for i in range(15)]
    freqs = [k * fs / nfft for k in range(kk)]
    dft_n = np.arange(nw)
    frames = []
    for m in range((len(y) - nw) // ns + 1):
        seg = np.array([y[m * ns + n] * win[n] for n in range(nw)])
        mag = []
        for k in range(kk):  # DFT by definition (zero-padded to nfft)
            ang = -2 * np.pi * k * dft_n / nfft
            mag.append(abs(complex(np.sum(seg * np.cos(ang)), np.sum(seg * np.sin(ang)))))
        log_fbe = []
        for j in range(n_filt):
            e = 0.0
            for k in range(kk):
                f = freqs[k]
                if c[j] <= f <= c[j + 1]:
                    e += mag[k] * (f - c[j]) / (c[j + 1] - c[j])
                elif c[j + 1] < f <= c[j + 2]:
                    e += mag[k] * (c[j + 2] - f) / (c[j + 2] - c[j + 1])
            log_fbe.append(math.log(e))
        cep = []
        for n in range(1, n_cep):
            s = sum(log_fbe[j - 1] * math.cos(n * math.pi * (j - 0.5) / n_filt) for j in range(1, n_filt + 1))
            cep.append(math.sqrt(2 / n_filt) * s * (1 + 11 * math.sin(math.pi * n / 22)))
        frames.append(cep)
    num_bins = math.floor(len(x) / fs * 25)
    out = []
    for l_ in range(2, num_bins - 4 + 1):
        out.append([frames[t] for t in range(4 * l_ - 8, 4 * l_ + 12)])
    return np.array(out)


def test_against_naive_reference() -> None:
    x = _signal(4500, seed=7)  # 28 frames, bins 2 and 3
    ref = _naive_mfcc_bins(x.tolist())
    got = audio.mfcc_bins(x)
    assert ref.shape == got.shape == (2, 20, 12)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
    # also for [-1, 1] float input (the audioread path)
    small = x / 40000
    np.testing.assert_allclose(audio.mfcc_bins(small), _naive_mfcc_bins(small.tolist()), rtol=0, atol=1e-10)


def test_digital_silence_is_not_floored() -> None:
    x = _signal(6000, 8)
    x[:2000] = 0.0  # frames 0..10 ([160m, 160m+400) with 160m+400 <= 2000) are all zeros
    frames = audio.mfcc_frames(x)
    assert not np.isfinite(frames[:11]).any()  # log(0) = -inf, then inf - inf in the DCT
    assert np.isfinite(frames[11:]).all()


# ----------------------------------------------------------------------------- .bin files


def test_write_bins_round_trip(tmp_path: Path) -> None:
    bins = audio.mfcc_bins(_signal(6400, 9))
    out = tmp_path / "a" / "mfcc20"
    (tmp_path / "a").mkdir()
    keep = tmp_path / "a" / "keep.txt"
    keep.write_text("x")
    paths = audio.write_bins(bins, out)
    assert [p.name for p in paths] == [f"{n}.bin" for n in audio.bin_numbers(len(bins))]
    for k, p in enumerate(paths):
        raw = p.read_bytes()
        assert len(raw) == 1920
        np.testing.assert_array_equal(np.fromfile(p).reshape(20, 12), bins[k])
        # MATLAB fwrite of the 12x20 matrix: column-major, little-endian float64
        np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f8"), bins[k].T.reshape(-1, order="F"))
    assert keep.read_text() == "x"
    again = audio.write_bins(bins[:1], out, first_bin=7)
    assert again == [out / "7.bin"] and len(list(out.iterdir())) == len(bins) + 1
    with pytest.raises(ValueError):
        audio.write_bins(np.zeros((2, 12, 20)), out)


# ----------------------------------------------------------------------------- real speech


def _speech_files() -> list[Path]:
    if not SPEECH_DIR.is_dir():
        pytest.skip(f"../shared/fixtures not found: {SPEECH_DIR} is absent")
    files = sorted(SPEECH_DIR.glob("*.wav"))
    if not files:
        pytest.skip(f"../shared/fixtures not found: no .wav in {SPEECH_DIR}")
    return files


def _load_16k(path: Path) -> np.ndarray:
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    sr, x = wavfile.read(path)
    assert sr == 48000 and x.dtype == np.int16 and x.ndim == 1
    return resample_poly(x.astype(np.float64), 1, 3)


def _active_frame_variance(y: np.ndarray, frames: np.ndarray) -> float:
    """Mean over c1..c12 of the variance over time, on frames with RMS > 5 % of the loudest."""
    rms = np.sqrt((sliding_window_view(y, 400)[::160][: len(frames)] ** 2).mean(axis=1))
    active = rms > 0.05 * rms.max()
    assert np.isfinite(frames[active]).all()
    return float(frames[active].var(axis=0).mean())


def test_real_speech() -> None:
    files = _speech_files()
    variances = {}
    for path in files:
        y = _load_16k(path)
        bins = audio.mfcc_bins(y)
        frames = audio.mfcc_frames(y)
        assert bins.shape == (math.floor(len(y) / 16000 * 25) - 5, 20, 12)
        assert bins.shape[0] >= 25  # ~1.4 s of audio
        # digital silence (the recordings have exact-zero pauses) is the only source of -inf/NaN
        silent = np.array([not y[160 * m : 160 * m + 400].any() for m in range(len(frames))])
        np.testing.assert_array_equal(np.isfinite(frames).all(axis=1), ~silent)
        assert np.abs(frames[~silent]).max() < 1e3
        variances[path.stem] = _active_frame_variance(y, frames)
    if "Noise" not in variances or len(variances) < 2:
        pytest.skip("../shared/fixtures not found: Noise.wav and a speech file are needed")
    noise = variances.pop("Noise")
    for name, v in variances.items():
        assert v > 2 * noise, f"{name}: cepstral variance {v:.1f} not > 2x noise {noise:.1f}"


# ----------------------------------------------------------------------------- why not a library


def test_python_speech_features_differs() -> None:
    psf = pytest.importorskip("python_speech_features")
    x = _signal(16000, 10)
    ours = audio.mfcc_frames(x)
    default = psf.mfcc(x, 16000)[:, 1:]
    # closest configuration psf allows: still power spectrum, bin-quantised filters, padded frames
    closest = psf.mfcc(
        x, 16000, nfilt=13, lowfreq=300, highfreq=3700, appendEnergy=False,
        winfunc=lambda n: 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n) / (n - 1)),
    )[:, 1:]  # fmt: skip
    for theirs in (default, closest):
        n = min(len(theirs), len(ours))
        diff = np.abs(theirs[:n] - ours[:n])
        assert np.median(diff) > 0.1 * np.median(np.abs(ours)), "python_speech_features matched?"


def test_dither_silence_makes_digital_silence_finite_and_leaves_speech_alone():
    rng = np.random.default_rng(0)
    speech = (rng.normal(0, 3000, 16000)).astype(np.int16)
    x = np.concatenate([speech[:8000], np.zeros(4000, np.int16), speech[8000:]])
    assert not np.isfinite(audio.mfcc_bins(x)).all()  # the original's pipeline: log(0) on the silent frames
    y, changed = audio.dither_silence(x)
    assert changed == 4000 and np.abs(y[8000:12000]).max() == 1
    assert np.array_equal(y[:8000], x[:8000]) and np.array_equal(y[12000:], x[12000:])
    assert np.isfinite(audio.mfcc_bins(y)).all()
    short = speech.copy()
    short[100:300] = 0  # shorter than one 25 ms frame: untouched
    assert audio.dither_silence(short)[1] == 0


def test_a_frames_mfcc_does_not_depend_on_how_many_are_computed_with_it():
    """Blocks of any size (and so chunked rendering and long clips) give the one-block result bit for bit."""
    x = np.random.default_rng(5).normal(0, 3000, 16000 * 11 + 999).astype(np.int16)
    prepared = audio._prepare(x, 16000)
    whole = audio._mfcc_from_prepared(prepared, 16000, block=10**9)
    for block in (1, 7, 64, 1000, audio.MFCC_BLOCK_FRAMES):
        np.testing.assert_array_equal(audio._mfcc_from_prepared(prepared, 16000, block=block), whole)
