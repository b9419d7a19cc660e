"""Rendering: one identity photo driven by speech or a video → mp4 (+ side by side, still grid, GIF)."""
