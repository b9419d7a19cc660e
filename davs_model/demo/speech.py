"""Offline speech for the demo dataset: espeak-ng through ctypes.

The shared library and its voice data come from the ``espeakng-loader`` wheel, so nothing is
downloaded and no system package is needed. The process-wide state is created lazily on the
first call; every synthesis then runs on a fresh library instance under a lock, so that the
same arguments give the same samples whatever else the process synthesised (see ``_Espeak``).
Separate processes (Snakemake jobs) are independent.

espeak-ng synthesises at 22050 Hz; ``synthesize`` returns 16 kHz int16 mono (the rate of the
DAVS/LRW preprocessing), resampled with a polyphase filter (320/441).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import tempfile
import threading
from fractions import Fraction

import numpy as np

__all__ = ["synthesize", "available_variants", "SAMPLE_RATE", "ESPEAK_RATE"]

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050  # espeak-ng's native rate (what espeak_Initialize reports)

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_EE_OK = 0
_EE_NOT_FOUND = 2
_RATE_MIN, _RATE_MAX = 80, 450  # espeakRATE_MINIMUM / espeakRATE_MAXIMUM


class _EspeakEvent(ctypes.Structure):
    # Only passed through as a pointer; the layout is declared for completeness.
    class _Id(ctypes.Union):
        _fields_ = [
            ("number", ctypes.c_int),
            ("name", ctypes.c_char_p),
            ("string", ctypes.c_char * 8),
        ]

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events)
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of the speak_lib.h functions used here."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    # espeak_ng.h: seeds the library's own random jitter.
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = ctypes.c_int


def _dlclose(handle: int) -> None:
    try:
        import _ctypes

        _ctypes.dlclose(handle)
    except (ImportError, AttributeError, OSError):  # not POSIX: the instance stays loaded
        pass


class _Espeak:
    """Process-wide espeak-ng access (created lazily by ``_engine``).

    espeak-ng keeps synthesis state in C statics that no API call resets (the pitch "flutter"
    phase, a function-local static in wavegen.c's ``AdvanceParameters``, and the glottal phase),
    so with one long-lived instance the samples of a word depend on everything synthesised
    before it in the process. For reproducible clips every synthesis therefore runs on a fresh
    instance: a private copy of the library file (a different path, so ``dlopen`` cannot hand
    back an instance that is already loaded, ours or another package's), loaded with
    RTLD_LOCAL, initialised (AUDIO_OUTPUT_SYNCHRONOUS, the wheel's data folder), used once,
    terminated and unloaded. That costs ~5 ms (mostly loading the voice). The process-wide part
    is the private folder for the copies and a lock: espeak-ng is not re-entrant.
    """

    def __init__(self) -> None:
        import espeakng_loader

        self.library_path = espeakng_loader.get_library_path()
        try:
            self.data_path = espeakng_loader.get_data_path()
        except RuntimeError as exc:
            raise RuntimeError(f"espeak-ng data missing for library {self.library_path}: {exc}") from exc
        if not os.path.isfile(self.library_path):
            raise RuntimeError(f"espeak-ng library not found: {self.library_path}")
        self._folder = tempfile.mkdtemp(prefix="davs-espeak-")
        atexit.register(shutil.rmtree, self._folder, True)
        self._count = 0
        self.rate = ESPEAK_RATE
        self.lock = threading.Lock()
        with self.lock, self._instance():  # fail early, with the library's path, if it cannot start
            pass

    @contextlib.contextmanager
    def _instance(self):
        """A freshly loaded and initialised library instance; unloaded on exit. Hold the lock."""
        self._count += 1
        copy = os.path.join(self._folder, f"libespeak-ng.{os.getpid()}.{self._count}.so")
        shutil.copyfile(self.library_path, copy)
        lib = None
        initialised = False
        try:
            try:
                lib = ctypes.CDLL(copy, mode=getattr(os, "RTLD_LOCAL", 0))
                _declare(lib)
            except (OSError, AttributeError) as exc:
                raise RuntimeError(f"cannot load espeak-ng library {self.library_path}: {exc}") from exc
            # 0x8000 = espeakINITIALIZE_DONT_EXIT: report a missing data folder instead of exit().
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode("utf-8"), 0x8000)
            if rate <= 0:
                raise RuntimeError(
                    f"espeak_Initialize failed (returned {rate}) for library {self.library_path} "
                    f"with data {self.data_path}"
                )
            initialised = True
            self.rate = rate  # 22050 Hz for espeak-ng's own voices
            yield lib
        finally:
            if lib is not None:
                if initialised:
                    lib.espeak_Terminate()
                handle = lib._handle
                del lib
                _dlclose(handle)
            with contextlib.suppress(OSError):
                os.remove(copy)

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int, seed: int) -> np.ndarray:
        data = text.encode("utf-8")
        chunks: list[np.ndarray] = []

        def on_samples(wav, numsamples, events) -> int:  # int SynthCallback(short*, int, espeak_EVENT*)
            if wav and numsamples > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
            return 0  # continue

        callback = _SynthCallback(on_samples)  # referenced until the instance is gone
        with self.lock, self._instance() as lib:
            lib.espeak_SetSynthCallback(callback)
            err = lib.espeak_SetVoiceByName(voice.encode("utf-8"))
            if err == _EE_NOT_FOUND:
                raise ValueError(f"espeak-ng voice not found: {voice!r}")
            if err != _EE_OK:
                raise RuntimeError(f"espeak_SetVoiceByName({voice!r}) failed with {err}")
            for param, value in ((_ESPEAK_RATE, rate_wpm), (_ESPEAK_PITCH, pitch)):
                err = lib.espeak_SetParameter(param, int(value), 0)
                if err != _EE_OK:
                    raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed with {err}")
            lib.espeak_ng_SetRandSeed(int(seed))
            err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with {err} for {text!r}")
            err = lib.espeak_Synchronize()
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synchronize failed with {err}")
        del callback
        if not chunks:
            return np.zeros(0, np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)


_ENGINE: _Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak:
    global _ENGINE
    if _ENGINE is None:
        with _ENGINE_LOCK:
            if _ENGINE is None:
                _ENGINE = _Espeak()
    return _ENGINE


def synthesize(
    text: str, voice: str = "en", rate_wpm: int = 150, pitch: int = 50, *, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng; returns (int16 mono samples at 16 kHz, 16000).

    ``voice`` is an espeak-ng voice name, optionally with a variant: "en", "en-us",
    "en-gb-x-rp", "en+f3", "en-us+m3", … (see ``available_variants``). ``rate_wpm`` is clamped
    to espeak's 80..450 words per minute, ``pitch`` to 0..100 (50 = the voice's normal pitch).
    ``seed`` seeds espeak-ng's own random generator (the plain voices tried here do not use it).
    The result is deterministic for given arguments and library version, whatever was
    synthesised before in the process.
    """
    from scipy.signal import resample_poly

    rate_wpm = int(np.clip(rate_wpm, _RATE_MIN, _RATE_MAX))
    pitch = int(np.clip(pitch, 0, 100))
    engine = _engine()
    raw = engine.synth(text, voice, rate_wpm, pitch, seed)
    if raw.size == 0:
        return raw, SAMPLE_RATE
    ratio = Fraction(SAMPLE_RATE, engine.rate)  # 320/441 for 22050 Hz
    y = resample_poly(raw.astype(np.float64), ratio.numerator, ratio.denominator)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16), SAMPLE_RATE


def available_variants() -> list[str]:
    """Names of the voice variants shipped with the library ("f3", "m3", …), usable as "+name"."""
    from pathlib import Path

    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
