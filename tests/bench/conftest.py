"""Fixtures for the hanrt_bench tests: tiny datasets made from real photo crops."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def hr_crops(photo) -> list[np.ndarray]:
    """Three real-photo HR crops (astronaut), sides multiples of 4 except the last (modcrop test)."""
    return [np.ascontiguousarray(photo[60:124, 200:272]), np.ascontiguousarray(photo[300:356, 120:180]),
            np.ascontiguousarray(photo[10:70, 400:462])]


@pytest.fixture()
def hr_folder(tmp_path, hr_crops):
    """A Set5-like folder of HR PNGs only."""
    d = tmp_path / "TinySet"
    d.mkdir()
    for i, im in enumerate(hr_crops):
        Image.fromarray(im).save(d / f"img{i}.png")
    return d
