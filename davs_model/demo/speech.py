"""Offline speech for the demo dataset: espeak-ng through ctypes.

The shared library and its voice data come from the ``espeakng-loader`` wheel, so nothing is
downloaded and no system package is needed. espeak-ng keeps global state, so the library is
initialised once per process (lazily, on the first call) and every synthesis holds a lock.
Separate processes (Snakemake jobs) each load their own copy.

espeak-ng synthesises at 22050 Hz; ``synthesize`` returns 16 kHz int16 mono (the rate of the
DAVS/LRW preprocessing), resampled with a polyphase filter (320/441).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

__all__ = ["synthesize", "available_variants", "SAMPLE_RATE", "ESPEAK_RATE"]

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050

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


class _Espeak:
    """The process-wide espeak-ng instance (created by ``_engine``)."""

    def __init__(self) -> None:
        import espeakng_loader

        self.library_path = espeakng_loader.get_library_path()
        self.data_path = espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(self.library_path)
        except OSError as exc:
            raise RuntimeError(f"cannot load espeak-ng library {self.library_path}: {exc}") from exc

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

        # 0x8000 = espeakINITIALIZE_DONT_EXIT: report a missing data folder instead of exit().
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode("utf-8"), 0x8000
        )
        if rate <= 0:
            raise RuntimeError(
                f"espeak_Initialize failed (returned {rate}) for library {self.library_path} "
                f"with data {self.data_path}"
            )
        if rate != ESPEAK_RATE:
            raise RuntimeError(
                f"espeak-ng library {self.library_path} reports {rate} Hz, expected {ESPEAK_RATE}"
            )
        self.lib = lib
        self.rate = rate
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        # Keep a reference to the ctypes callback for the life of the process.
        self._callback = _SynthCallback(self._on_samples)
        lib.espeak_SetSynthCallback(self._callback)

    def _on_samples(self, wav, numsamples, events) -> int:  # noqa: ARG002 (C signature)
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # continue

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int) -> np.ndarray:
        data = text.encode("utf-8")
        with self.lock:
            err = self.lib.espeak_SetVoiceByName(voice.encode("utf-8"))
            if err == _EE_NOT_FOUND:
                raise ValueError(f"espeak-ng voice not found: {voice!r}")
            if err != _EE_OK:
                raise RuntimeError(f"espeak_SetVoiceByName({voice!r}) failed with {err}")
            for param, value in ((_ESPEAK_RATE, rate_wpm), (_ESPEAK_PITCH, pitch)):
                err = self.lib.espeak_SetParameter(param, int(value), 0)
                if err != _EE_OK:
                    raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed with {err}")
            self._chunks = []
            try:
                err = self.lib.espeak_Synth(
                    data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
                )
                if err != _EE_OK:
                    raise RuntimeError(f"espeak_Synth failed with {err} for {text!r}")
                err = self.lib.espeak_Synchronize()
                if err != _EE_OK:
                    raise RuntimeError(f"espeak_Synchronize failed with {err}")
                chunks = self._chunks
            finally:
                self._chunks = []
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
    text: str, voice: str = "en", rate_wpm: int = 150, pitch: int = 50
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng; returns (int16 mono samples at 16 kHz, 16000).

    ``voice`` is an espeak-ng voice name, optionally with a variant: "en", "en-us",
    "en-gb-x-rp", "en+f3", "en-us+m3", … (see ``available_variants``). ``rate_wpm`` is clamped
    to espeak's 80..450 words per minute, ``pitch`` to 0..100 (50 = the voice's normal pitch).
    The result is deterministic for given arguments and library version.
    """
    from scipy.signal import resample_poly

    rate_wpm = int(np.clip(rate_wpm, _RATE_MIN, _RATE_MAX))
    pitch = int(np.clip(pitch, 0, 100))
    raw = _engine().synth(text, voice, rate_wpm, pitch)
    if raw.size == 0:
        return raw, SAMPLE_RATE
    y = resample_poly(raw.astype(np.float64), 320, 441)  # 22050 → 16000 Hz
    return np.clip(np.round(y), -32768, 32767).astype(np.int16), SAMPLE_RATE


def available_variants() -> list[str]:
    """Names of the voice variants shipped with the library ("f3", "m3", …), usable as "+name"."""
    from pathlib import Path

    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
