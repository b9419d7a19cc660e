"""Where rendered frames go, one frame at a time: the mp4, the side-by-side mp4, the still grid and the GIF.

Nothing keeps the whole video: the mp4 encoders take each frame as it comes, the grid keeps only its few chosen
frames, and the GIF is encoded on the fly with one palette (taken from the identity photo, which every frame
resembles). Files appear atomically (temporary name, then rename) and only when rendering succeeded.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from davs_model.io.writer import Mp4Writer

FPS = 25
WAVE_COLOUR = (90, 200, 255)  # RGB


def waveform_panel(window: np.ndarray, size: int, peak: float = 32768.0) -> np.ndarray:
    """A (size, size, 3) uint8 RGB drawing of the int16 speech window that drives a frame (the audio-mode
    'driving' panel of the side-by-side video): dark background, the waveform scaled so that ``peak`` (the
    loudest sample of the whole speech) fills the height, a line at the window centre."""
    panel = np.full((size, size, 3), 24, np.uint8)
    w = np.asarray(window, dtype=np.float64)
    if len(w) > 1:
        y = size / 2 - (w / max(float(peak), 1.0)) * (size / 2 - 2)
        x = np.linspace(0, size - 1, len(w))
        pts = np.stack([x, np.clip(y, 0, size - 1)], 1).round().astype(np.int32)
        cv2.polylines(panel, [pts], False, WAVE_COLOUR, 1, cv2.LINE_AA)
    cv2.line(panel, (size // 2, 0), (size // 2, size - 1), (80, 80, 80), 1)
    return panel


class GifWriter:
    """Streaming GIF (FFmpeg's gif encoder via PyAV, 25 fps = 4 cs per frame) with one fixed 256-colour palette."""

    def __init__(self, path: str | Path, palette_source_rgb: np.ndarray, fps: int = FPS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        self._palette = Image.fromarray(palette_source_rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        rgb = np.array(self._palette.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
        rgb = np.pad(rgb, ((0, 256 - len(rgb)), (0, 0)))
        self._argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)
        self.fps, self.n = fps, 0
        self._container = self._stream = None

    def write(self, frame_rgb: np.ndarray) -> None:
        if self._container is None:
            self._container = av.open(str(self.tmp), mode="w", format="gif")
            self._stream = self._container.add_stream("gif", rate=self.fps)
            self._stream.height, self._stream.width = frame_rgb.shape[:2]
            self._stream.pix_fmt = "pal8"
        index = np.asarray(Image.fromarray(frame_rgb).quantize(palette=self._palette, dither=Image.Dither.NONE))
        frame = av.VideoFrame.from_ndarray((np.ascontiguousarray(index), self._argb), format="pal8")
        frame.pts = self.n
        self._container.mux(self._stream.encode(frame))
        self.n += 1

    def close(self, ok: bool) -> None:
        try:
            if self._container is not None:
                if ok:
                    self._container.mux(self._stream.encode(None))
                self._container.close()
                if ok:
                    os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)


class GridCollector:
    """Keeps the frames at ``n`` evenly spaced indices of a video of ``n_frames``; writes a PNG grid:
    row 1 = identity, generated frames; row 2 (when panels were given) = blank, driving panels."""

    def __init__(self, path: str | Path, identity_rgb: np.ndarray, n_frames: int, n: int = 8) -> None:
        self.path, self.identity = Path(path), identity_rgb
        self.indices = sorted(
            set(np.linspace(0, max(n_frames - 1, 0), min(n, max(n_frames, 1))).round().astype(int))
        )
        self.generated: dict[int, np.ndarray] = {}
        self.panels: dict[int, np.ndarray] = {}

    def offer(self, index: int, generated_rgb: np.ndarray, panel_rgb: np.ndarray | None) -> None:
        if index in self.indices:
            self.generated[index] = generated_rgb.copy()
            if panel_rgb is not None:
                self.panels[index] = panel_rgb.copy()

    def write(self) -> None:
        size = self.identity.shape[0]
        keys = [i for i in self.indices if i in self.generated]
        rows = [np.hstack([self.identity] + [self.generated[i] for i in keys])]
        if self.panels:
            blank = np.full_like(self.identity, 255)
            rows.append(np.hstack([blank] + [self.panels.get(i, blank) for i in keys]))
        grid = np.vstack(rows)
        grid = np.pad(grid, ((0, 0), (0, max(0, size * (1 + len(keys)) - grid.shape[1])), (0, 0)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(grid[:, :, ::-1]))
        if not ok:
            raise OSError(f"{self.path}: PNG encoding failed")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        buf.tofile(str(tmp))
        os.replace(tmp, self.path)


def _even(image: np.ndarray) -> np.ndarray:
    """Pad to even height and width (yuv420p) by repeating the last row/column."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else image


class RenderOutputs(contextlib.AbstractContextManager):
    """All outputs of one render; ``add`` one generated frame (RGB uint8) and its driving panel at a time.

    The side-by-side mp4 and the still grid show the aligned crops; the main mp4 and the GIF show the whole frame
    when ``add`` is given one (paste-back; ``photo_rgb`` is then the GIF's palette source).
    """

    def __init__(
        self,
        out_mp4: str | Path,
        identity_rgb: np.ndarray,
        n_frames: int,
        audio: np.ndarray | None,
        side_by_side: str | Path | None = None,
        grid: str | Path | None = None,
        gif: str | Path | None = None,
        grid_frames: int = 8,
        photo_rgb: np.ndarray | None = None,
    ) -> None:
        self._stack = contextlib.ExitStack()
        self.identity = identity_rgb
        self.main = self._stack.enter_context(Mp4Writer(out_mp4, fps=FPS, audio=audio))
        self.sbs = (
            self._stack.enter_context(Mp4Writer(side_by_side, fps=FPS, audio=audio)) if side_by_side else None
        )
        self.grid = GridCollector(grid, identity_rgb, n_frames, grid_frames) if grid else None
        self.gif = GifWriter(gif, identity_rgb if photo_rgb is None else photo_rgb) if gif else None
        self.n = 0

    def add(
        self, generated_rgb: np.ndarray, panel_rgb: np.ndarray | None = None, full_bgr: np.ndarray | None = None
    ) -> None:
        """One output frame: the generated crop, its driving panel and, with paste-back, the whole frame (BGR),
        which then is what the main mp4 and the GIF show."""
        main_bgr = generated_rgb[:, :, ::-1] if full_bgr is None else full_bgr
        self.main.write(_even(np.ascontiguousarray(main_bgr)))
        if self.sbs is not None:
            panel = panel_rgb if panel_rgb is not None else np.zeros_like(generated_rgb)
            row = np.hstack([self.identity, panel, generated_rgb])
            self.sbs.write(_even(np.ascontiguousarray(row[:, :, ::-1])))
        if self.grid is not None:
            self.grid.offer(self.n, generated_rgb, panel_rgb)
        if self.gif is not None:
            self.gif.write(generated_rgb if full_bgr is None else np.ascontiguousarray(full_bgr[:, :, ::-1]))
        self.n += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        ok = exc_type is None
        try:
            if self.gif is not None:
                self.gif.close(ok)
        finally:
            self._stack.__exit__(exc_type, exc, tb)  # the mp4s: finished on success, removed on error
        if ok and self.grid is not None:
            self.grid.write()


def video_to_gif(mp4: str | Path, gif: str | Path) -> int:
    """Re-encode a rendered video as a GIF (same frames, 25 fps, palette of its first frame), streaming; returns
    the number of frames."""
    from davs_model.io.media import iter_video_frames

    writer = None
    try:
        for frame in iter_video_frames(mp4, fps=FPS):
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            writer = writer or GifWriter(gif, rgb)
            writer.write(rgb)
    except BaseException:
        if writer is not None:
            writer.close(ok=False)
        raise
    if writer is None:
        raise ValueError(f"{mp4}: no frame decodes")
    writer.close(ok=True)
    return writer.n
