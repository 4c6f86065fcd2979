"""Shared fixtures: tiny HAN models (PyTorch and ONNX, float and uint8 I/O), real photos, markers.

Tiny models keep the suite fast on a 2-core CPU: HAN with 2 groups x 1 block x 8 features, random
weights with both attention gammas nonzero so the attention modules matter. The ONNX graphs are
committed (tests/fixtures/tiny_*.onnx, made by tests/fixtures/make_tiny_models.py), so the runtime
tests need no torch; the PyTorch fixtures skip their tests where torch is not installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"

from hanrt_testkit import TINY, make_test_video, make_tiny_han, read_frame_index  # noqa: F401


def _has_cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    return True, ""


def _has_trt() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT (the 'tensorrt' Python package) is not installed"
    ok, why = _has_cuda()
    return ok, why


def pytest_collection_modifyitems(config, items):
    cuda_ok, cuda_why = _has_cuda()
    trt_ok, trt_why = _has_trt()
    for item in items:
        if "gpu" in item.keywords and not cuda_ok:
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {cuda_why}"))
        if "trt" in item.keywords and not trt_ok:
            item.add_marker(pytest.mark.skip(reason=f"trt test: {trt_why}"))


@pytest.fixture(scope="session")
def tiny_han():
    pytest.importorskip("torch")
    return make_tiny_han()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_han):
    from hanrt_export.checkpoint import save_checkpoint

    p = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_han, p)
    return p


def _fixture_copy(tmp_path_factory, name: str) -> Path:
    """A private copy of a committed fixture (tests may write beside it: sidecars, repositories)."""
    p = tmp_path_factory.mktemp("onnx") / name
    shutil.copyfile(FIXTURES / name, p)
    return p


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """Path to a tiny float-I/O (NCHW float32 0..255) HAN x4 ONNX graph (``tiny_han`` exported)."""
    return _fixture_copy(tmp_path_factory, "tiny_float.onnx")


@pytest.fixture(scope="session")
def tiny_onnx_uint8(tmp_path_factory):
    """Path to a tiny uint8-I/O (NHWC uint8) HAN x4 ONNX graph (``tiny_han`` exported)."""
    return _fixture_copy(tmp_path_factory, "tiny_uint8.onnx")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo (scikit-image's astronaut, 512x512x3 uint8, public domain)."""
    skd = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skd.astronaut())


@pytest.fixture(scope="session")
def photo_small() -> np.ndarray:
    """A 61x47 odd-sized crop of the photo (fast through tiny models): rows 200..260, columns 180..226,
    committed as tests/fixtures/photo_small.png (no scikit-image needed)."""
    from PIL import Image

    with Image.open(FIXTURES / "photo_small.png") as im:
        return np.asarray(im.convert("RGB")).copy()


# --- streaming media (issue 5) ----------------------------------------------------------------

@pytest.fixture(scope="session")
def sample_video(tmp_path_factory):
    """64 frames of 96x64 moving content at 25 fps (H.264) with a 2.56 s AAC audio track."""
    return make_test_video(tmp_path_factory.mktemp("media") / "sample.mp4")


@pytest.fixture(scope="session")
def tiny_upscaler_factory(tiny_onnx):
    """Open an Upscaler on the tiny float ONNX model (ONNX Runtime CPU, one thread, whole frame)."""
    pytest.importorskip("onnxruntime")
    from hanrt.upscaler import Upscaler

    def make(**kw):
        kw.setdefault("backend", "ort-cpu")
        kw.setdefault("tile", 0)
        kw.setdefault("threads", 1)
        return Upscaler(tiny_onnx, **kw)

    return make


# --- precision and TensorRT (issue 3) ---------------------------------------------------------

# Real photos shipped in scikit-image that are NOT in the held-out evaluation set E1
# (hanrt_bench.quality.E1_NAMES): the only photos tests may calibrate on.
CALIB_PHOTO_NAMES = ("cat", "immunohistochemistry", "retina")


@pytest.fixture(scope="session")
def calib_photos() -> list:
    """Three real photos (HxWx3 uint8) for calibration, none of them from E1."""
    skd = pytest.importorskip("skimage.data")
    return [np.ascontiguousarray(getattr(skd, n)()[..., :3]) for n in CALIB_PHOTO_NAMES]


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory, calib_photos):
    """A folder of 3 calibration photos (PNG, shrunk to <= 256 px) for ``--calib``."""
    from PIL import Image

    d = tmp_path_factory.mktemp("calib")
    for n, a in zip(CALIB_PHOTO_NAMES, calib_photos):
        im = Image.fromarray(a)
        im.thumbnail((256, 256))
        im.save(d / f"{n}.png")
    return d


# --- TensorRT / cuda-bindings fakes generated from the real modules (issue 11) ------------------

@pytest.fixture
def trt_fakes():
    """``make(trt_version="10.3.0", cuda_version="12.9.10", **kw)``: install the fakes of those
    versions (:func:`trtfakes.install`; specs from the real wheels, see tests/conformance) and return
    them (``.trt``, ``.cudart``, ``.sim``, ``.log``); uninstalled after the test, which fails if a call
    broke the real API. Skipped where the real modules cannot be had (a failure under CI=true)."""
    import contextlib

    import trtfakes
    from conformance import fetch

    stack = contextlib.ExitStack()
    made: list = []

    def make(trt_version: str = "10.3.0", cuda_version: str = "12.9.10", **kw):
        import importlib.util

        why = fetch.why_unavailable()
        if why is None and importlib.util.find_spec("onnx") is None:  # the fake parser reads graphs with onnx
            why = "the TensorRT fakes parse ONNX graphs with the onnx package (pip install 'hanrt[export]')"
        try:
            if why is None:
                made.append(stack.enter_context(trtfakes.install(trt_version, cuda_version, **kw)))
                return made[-1]
        except fetch.Unavailable as exc:
            why = str(exc)
        fetch.skip_or_fail(why)

    with stack:
        yield make
        violations = [v for fx in made for v in fx.log.violations]
    assert not violations, "calls the real TensorRT / CUDA API would refuse:\n" + "\n".join(violations)
