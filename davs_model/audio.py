"""Exact numpy port of the DAVS authors' MATLAB MFCC pipeline (spec §1.3).

The original code is Kamil Wojcicki's ``mfcc.m`` (with ``trifbank.m`` and ``vec2frames.m``),
driven by ``runmfcc.m`` and configured in ``save_mfccs.m`` (LRW) and ``savemfcc.m`` (arbitrary
test audio): fs = 16 kHz, Tw = 25 ms, Ts = 10 ms, alpha = 0.97, R = [300 3700] Hz, M = 13 filters,
N = 13 cepstra, L = 22. Every step below mirrors one line of that code, including its order of
floating-point operations, so the results agree with MATLAB to FFT round-off (~1e-12 relative).

Window l (the original's file ``l.bin``, l >= 2) is ``mfccs(:, 4*l-7 : 4*l+12)`` (MATLAB, 1-based
columns), i.e. MFCC frames 4(l-2) .. 4(l-2)+19 (0-based). It is paired with video frame l.
"""

# Hand-written on purpose: the released DAVS checkpoint needs these exact features, and no library
# (python_speech_features, librosa, torchaudio) reproduces Wojcicki's mfcc.m (magnitude spectrum,
# 300-3700 Hz peak-1 triangles, no mel floor, HTK lifter). Do not replace it with a library call.

from __future__ import annotations

import math
from collections.abc import Iterator
from os import PathLike
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "ALPHA",
    "N_CEPS",
    "N_FILTERS",
    "WINDOW_FRAMES",
    "WINDOW_HOP",
    "bin_numbers",
    "cutoff_frequencies",
    "dct_matrix",
    "filterbank",
    "lifter",
    "mfcc_bins",
    "mfcc_frames",
    "write_bins",
]

TW_MS = 25.0  # analysis frame duration (ms)
TS_MS = 10.0  # analysis frame shift (ms)
ALPHA = 0.97  # pre-emphasis coefficient
F_RANGE = (300.0, 3700.0)  # filterbank limits (Hz)
N_FILTERS = 13  # opt.M
N_CEPS = 13  # opt.C (c0..c12; c0 is dropped afterwards)
LIFTER = 22  # opt.L
WINDOW_FRAMES = 20  # MFCC frames per .bin window (200 ms)
WINDOW_HOP = 4  # MFCC frames between windows (40 ms = one 25 fps video frame)
FIRST_BIN = 2  # the original numbers its windows from 2


MFCC_BLOCK_FRAMES = 1024  # 10 ms frames per block of the MFCC computation (≈ 7 MB of work arrays)


def _matlab_round(x: float) -> int:
    """MATLAB ``round`` (half away from zero) for x >= 0; Python's round() is half-to-even."""
    return int(math.floor(x + 0.5))


def _frame_params(fs: int) -> tuple[int, int, int]:
    """(Nw, Ns, nfft) exactly as mfcc.m computes them."""
    nw = _matlab_round(1e-3 * TW_MS * fs)
    ns = _matlab_round(1e-3 * TS_MS * fs)
    if nw < 1 or ns < 1:
        raise ValueError(f"sample_rate {fs} is too low for 25 ms / 10 ms frames")
    nfft = 1 << (nw - 1).bit_length()  # 2^nextpow2(Nw)
    return nw, ns, nfft


def _hz2mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127 * np.log(1 + np.asarray(hz, dtype=np.float64) / 700)


def _mel2hz(mel: np.ndarray | float) -> np.ndarray:
    return 700 * np.exp(np.asarray(mel, dtype=np.float64) / 1127) - 700


def cutoff_frequencies(n_filters: int = N_FILTERS, f_range: tuple[float, float] = F_RANGE) -> np.ndarray:
    """The M+2 edge frequencies c (Hz) of trifbank.m; c[1:-1] are the filter centres."""
    lo, hi = _hz2mel(f_range[0]), _hz2mel(f_range[1])
    return _mel2hz(lo + np.arange(n_filters + 2) * ((hi - lo) / (n_filters + 1)))


def filterbank(sample_rate: int = 16000, n_filters: int = N_FILTERS) -> np.ndarray:
    """trifbank.m (Eq. 6.141, peak-1 triangles), shape (M, K), K = nfft/2+1.

    Evaluated on f = linspace(0, fs/2, K) with MATLAB's inclusive masks; zero outside each filter.
    """
    _, _, nfft = _frame_params(sample_rate)
    k = nfft // 2 + 1
    f = np.linspace(0.0, 0.5 * sample_rate, k)
    c = cutoff_frequencies(n_filters)
    h = np.zeros((n_filters, k))
    for m in range(n_filters):  # 13 rows: a loop keeps the MATLAB masks (and overwrite order) exact
        up = (f >= c[m]) & (f <= c[m + 1])
        h[m, up] = (f[up] - c[m]) / (c[m + 1] - c[m])
        down = (f >= c[m + 1]) & (f <= c[m + 2])
        h[m, down] = (c[m + 2] - f[down]) / (c[m + 2] - c[m + 1])
    return h


def dct_matrix(n_ceps: int = N_CEPS, n_filters: int = N_FILTERS) -> np.ndarray:
    """Type-III DCT matrix of mfcc.m: sqrt(2/M)·cos(n·π(m−0.5)/M), n = 0..N−1, m = 1..M."""
    n = np.arange(n_ceps, dtype=np.float64)[:, None]
    m = np.arange(1, n_filters + 1, dtype=np.float64)[None, :]
    return math.sqrt(2.0 / n_filters) * np.cos(n * (np.pi * (m - 0.5) / n_filters))


def lifter(n_ceps: int = N_CEPS, lift: int = LIFTER) -> np.ndarray:
    """ceplifter of mfcc.m: 1 + 0.5·L·sin(π n/L), n = 0..N−1 (L = 22 → 1 + 11·sin(π n/22))."""
    n = np.arange(n_ceps, dtype=np.float64)
    return 1 + 0.5 * lift * np.sin(np.pi * n / lift)


def _prepare(samples: np.ndarray, sample_rate: int, trim_end: int = 0) -> np.ndarray:
    """Validate, take channel 1, trim, convert to float64 and apply mfcc.m's 2^15 scaling rule."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise ValueError(f"sample_rate must be an integer, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if trim_end < 0:
        raise ValueError(f"trim_end must be >= 0, got {trim_end}")
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x[:, 0]  # savemfcc.m: Speech(:, 1)
    elif x.ndim != 1:
        raise ValueError(f"samples must be 1-D or 2-D (n, channels), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"samples must be integer PCM or float, got dtype {x.dtype}")
    is_int = np.issubdtype(x.dtype, np.integer)
    if trim_end:
        x = x[: max(len(x) - trim_end, 0)]  # save_mfccs.m: Speech(1:end-600)
    nw, _, _ = _frame_params(sample_rate)
    if len(x) < nw:
        raise ValueError(f"audio too short: {len(x)} samples (after trim_end={trim_end}) < one {nw}-sample frame")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or inf")
    if not is_int and np.max(np.abs(x)) <= 1:
        x = x * 2.0**15  # mfcc.m: "Explode samples to the range of 16 bit shorts"
    return x


def _mfcc_from_prepared(x: np.ndarray, fs: int, block: int | None = None) -> np.ndarray:
    """MFCCs c1..c12 of the pre-scaled signal, computed ``block`` frames at a time (default
    MFCC_BLOCK_FRAMES) so that memory stays flat in the audio length; every frame is independent, and the
    result equals the one-block computation bit for bit (tested)."""
    nw, ns, nfft = _frame_params(fs)
    y = np.empty_like(x)  # filter([1 -alpha], 1, x): y[0] = x[0]
    y[0] = x[0]
    y[1:] = x[1:] - ALPHA * x[:-1]
    n_frames = (len(y) - nw) // ns + 1  # vec2frames(..., false): no padding
    all_frames = sliding_window_view(y, nw)[::ns][:n_frames]
    n = np.arange(nw, dtype=np.float64)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n / (nw - 1)) if nw > 1 else np.ones(1)
    fb, dct, lift = filterbank(fs).T, dct_matrix().T, lifter()
    block = block or MFCC_BLOCK_FRAMES
    out = np.empty((n_frames, N_CEPS - 1))
    for a in range(0, n_frames, block):
        frames = all_frames[a : a + block]
        mag = np.abs(np.fft.rfft(frames * window, n=nfft, axis=1))  # (M, nfft/2+1)
        # einsum, not BLAS: a BLAS product rounds differently with the number of rows (1e-14), einsum's loops do
        # not, so a frame's MFCC never depends on how many frames are computed with it (blocks, chunks, clips)
        fbe = np.einsum("mk,kf->mf", mag, fb)  # (M, 13)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            cc = np.einsum("mf,fc->mc", np.log(fbe), dct)  # no mel floor: log(0) = -inf, as in MATLAB
            cc = cc * lift
        out[a : a + len(frames)] = cc[:, 1:]  # MFCCs(2:end, :): drop c0
    return out


def mfcc_frames(samples: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """MFCCs c1..c12 of every 10 ms frame, shape (M, 12) float64, M = floor((L−Nw)/Ns)+1.

    ``samples``: 1-D, or 2-D (n, channels) of which channel 0 is used. Float input with
    max|x| <= 1 is scaled by 2^15 (audioread output → int16 range); integer PCM (int16) is used
    as-is. Raises ValueError for a non-positive sample rate, NaN/inf samples, or input shorter
    than one 25 ms frame (empty included). Digital silence gives -inf/NaN (no mel floor, as in
    MATLAB); numpy warnings are silenced.
    """
    return _mfcc_from_prepared(_prepare(samples, sample_rate), sample_rate)


def _n_bins(n_samples: int, fs: int, n_frames: int) -> int:
    num_bins = math.floor(n_samples / fs * 25)  # float arithmetic exactly as savemfcc.m
    last = num_bins - 4  # savemfcc.m: for l = 2:num_bins - 4
    last = min(last, (n_frames - 12) // WINDOW_HOP)  # never past the last frame: 4l+12 <= M
    return max(last - FIRST_BIN + 1, 0)


def mfcc_bins(samples: np.ndarray, sample_rate: int = 16000, trim_end: int = 0) -> np.ndarray:
    """The original's ``l.bin`` windows, shape (N, 20, 12) float64 = [bin, time, coeff].

    Row k is bin l = k + 2, i.e. MATLAB ``mfccs(:, 4*l-7 : 4*l+12)`` transposed to [time, coeff]:
    exactly ``np.fromfile('l.bin').reshape(20, 12)``. It starts at MFCC frame 4(l−2).

    With ``trim_end > 0`` the last ``trim_end`` samples are dropped first (LRW's
    ``Speech(1:end-600)``). The count follows savemfcc.m: with L the (trimmed) length,
    ``num_bins = floor(L/fs*25)`` in floating point (as MATLAB: for a few L, e.g. 18560, this is
    one less than the exact integer quotient) and bins l = 2..num_bins−4; additionally a bin whose
    window would run past the last MFCC frame (4l+12 > M) is never returned (cannot happen at
    16 kHz). For LRW
    (1.28 s = 20480 samples, trim 600) this yields 26 bins, whose first 25 rows (bins 2..26) are
    what save_mfccs.m writes. Audio with at least one frame but too short for any bin gives shape
    (0, 20, 12); shorter audio raises ValueError (see :func:`mfcc_frames`).
    """
    x = _prepare(samples, sample_rate, trim_end)
    cc = _mfcc_from_prepared(x, sample_rate)
    n = _n_bins(len(x), sample_rate, len(cc))
    if n == 0:
        return np.zeros((0, WINDOW_FRAMES, N_CEPS - 1))
    windows = sliding_window_view(cc, WINDOW_FRAMES, axis=0)[::WINDOW_HOP][:n]  # (n, 12, 20)
    return np.ascontiguousarray(windows.transpose(0, 2, 1))


def count_bins(n_samples: int, sample_rate: int = 16000) -> int:
    """Number of rows :func:`mfcc_bins` returns for ``n_samples`` samples (no trim), without computing them."""
    nw, ns, _ = _frame_params(sample_rate)
    return _n_bins(n_samples, sample_rate, (n_samples - nw) // ns + 1) if n_samples >= nw else 0


def iter_mfcc_bins(samples: np.ndarray, chunk_bins: int = 64, sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """The rows of :func:`mfcc_bins` (int16 samples, no trim) in chunks of at most ``chunk_bins`` windows,
    float32 (k, 20, 12), bit-identical to the whole-signal computation: memory stays flat for any audio length.

    A chunk starting at bin row k needs MFCC frames 4k … and the pre-emphasis needs the sample before them: the
    segment starts one hop early and its first MFCC frame (with the segment's own y[0]) is dropped.
    """
    if np.asarray(samples).dtype != np.int16:
        raise TypeError("iter_mfcc_bins needs int16 samples (float input is scaled by its global peak)")
    nw, ns, _ = _frame_params(sample_rate)
    n = count_bins(len(samples), sample_rate)
    for k0 in range(0, n, chunk_bins):
        k1 = min(n, k0 + chunk_bins)
        f0, f1 = WINDOW_HOP * k0, WINDOW_HOP * (k1 - 1) + WINDOW_FRAMES  # MFCC frames [f0, f1)
        lead = 1 if f0 > 0 else 0
        seg = samples[(f0 - lead) * ns : (f1 - 1) * ns + nw].astype(np.float64)
        cc = _mfcc_from_prepared(seg, sample_rate)[lead:]
        windows = sliding_window_view(cc, WINDOW_FRAMES, axis=0)[::WINDOW_HOP][: k1 - k0]
        yield np.ascontiguousarray(windows.transpose(0, 2, 1), dtype=np.float32)


def bin_numbers(n_bins: int) -> np.ndarray:
    """The original's bin numbers (file names) for rows 0..n−1: arange(2, 2+n)."""
    return np.arange(FIRST_BIN, FIRST_BIN + n_bins)


def write_bins(bins: np.ndarray, out_dir: str | PathLike[str], first_bin: int = FIRST_BIN) -> list[Path]:
    """Write ``{first_bin+k}.bin``: 240 little-endian float64, byte-identical to MATLAB's
    ``fwrite(f, mfccs_12x20, 'double')`` (column-major 12×20 = row-major [time, coeff]).

    ``np.fromfile(p).reshape(20, 12)`` gives back ``bins[k]``. Creates ``out_dir`` if needed,
    overwrites same-named files, deletes nothing. Returns the written paths in order.
    """
    arr = np.asarray(bins, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (WINDOW_FRAMES, N_CEPS - 1):
        raise ValueError(f"bins must have shape (N, 20, 12), got {arr.shape}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, window in enumerate(arr):
        path = out / f"{first_bin + k}.bin"
        path.write_bytes(np.ascontiguousarray(window, dtype="<f8").tobytes())
        paths.append(path)
    return paths


def dither_silence(samples: np.ndarray, min_run: int = 400, seed: int = 0) -> tuple[np.ndarray, int]:
    """Replace runs of ≥ ``min_run`` exact-zero int16 samples with ±1 LSB deterministic noise.

    The original's MFCC has no floor: a 25 ms frame of digital silence gives log(0) = −inf, which the networks turn
    into NaN (the blank frames its users reported). A ±1 dither is 90 dB below speech and leaves every frame with
    any signal bit-identical. Returns (samples, number of samples changed). Not used in preprocessing, which
    keeps the original's features and rejects such clips with a reason instead.
    """
    x = np.asarray(samples)
    if x.dtype != np.int16:
        raise TypeError("dither_silence expects int16 samples")
    zero = np.concatenate(([False], x == 0, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    long = (ends - starts) >= min_run
    if not long.any():
        return x, 0
    out = x.copy()
    rng = np.random.default_rng(seed)
    changed = 0
    for s, e in zip(starts[long], ends[long], strict=True):
        out[s:e] = rng.choice(np.array([-1, 1], np.int16), size=e - s)
        changed += e - s
    return out, changed
