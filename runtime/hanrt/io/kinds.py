"""Which files are videos, by suffix: a constant the still-image path needs without importing
:mod:`hanrt.io.video` (its frames, fractions and PyAV helpers cost ~10 ms at start-up). Stdlib only;
:mod:`hanrt.io.video` re-exports it."""

from __future__ import annotations

__all__ = ["VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
     ".mpg", ".mpeg", ".3gp", ".ogv", ".y4m", ".gif"}
)
