"""The PyTorch CUDA pinned-memory/stream path through the pipeline (``gpu``: skipped without CUDA).

Needs neither PyAV nor ONNX Runtime, so it runs on a GPU machine that has only torch (see
benchmarks/gpu_check.sh). Frames are synthetic (the iterator API), the model the tiny HAN. The slot
logic also runs on the CPU (device="cpu": no streams, no pinned memory) so it is checked here.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hanrt_testkit import make_tiny_han
from hanrt.io.frames import Frame
from hanrt.pipeline import Pipeline, PipelineOptions

torch = pytest.importorskip("torch")


def _frames(n: int = 8, h: int = 48, w: int = 64) -> list[Frame]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return [Frame(image=np.roll(base, 3 * i, axis=1), index=i, t_capture=0.0) for i in range(n)]


def _reference(model, img: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        y = model(x)
    return torch.clamp(y, 0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("slots", [1, 3])
def test_slot_logic_on_the_cpu(slots):
    """The same submit/wait slot code without CUDA (device='cpu'): order and values."""
    from hanrt_export.torch_stream import TorchStreamProcessor

    model = make_tiny_han()
    frames = _frames(5, 24, 32)
    with TorchStreamProcessor(copy.deepcopy(model), device="cpu", slots=slots) as proc:
        out = list(Pipeline(iter(frames), proc, options=PipelineOptions(queue_size=2)).frames())
    assert [f.index for f in out] == list(range(5))
    for f, o in zip(frames, out):
        np.testing.assert_array_equal(o.image, _reference(model, f.image))


@pytest.mark.gpu
@pytest.mark.parametrize("memory", ["copy", "mapped"])
@pytest.mark.parametrize("slots", [1, 3])
def test_matches_the_cpu_reference_in_order(memory, slots):
    from hanrt_export.torch_stream import TorchStreamProcessor

    model = make_tiny_han()
    frames = _frames()
    with TorchStreamProcessor(copy.deepcopy(model), slots=slots, memory=memory) as proc:
        out = list(Pipeline(iter(frames), proc, options=PipelineOptions(queue_size=2)).frames())
    assert [f.index for f in out] == list(range(len(frames)))
    for f, o in zip(frames, out):
        assert o.image.shape == (48 * 4, 64 * 4, 3) and o.image.dtype == np.uint8
        assert np.abs(o.image.astype(int) - _reference(model, f.image).astype(int)).max() <= 1


@pytest.mark.gpu
def test_fp16_is_close_to_fp32_and_sizes_can_change():
    from hanrt_export.torch_stream import TorchStreamProcessor

    model = make_tiny_han()
    with TorchStreamProcessor(copy.deepcopy(model), fp16=True, slots=2) as proc:
        for h, w in ((48, 64), (31, 17), (48, 64)):
            img = _frames(1, h, w)[0].image
            a = proc.upscale(img).astype(float)
            ref = _reference(model, img).astype(float)
            psnr = 10 * np.log10(255 ** 2 / max(np.mean((a - ref) ** 2), 1e-12))
            assert psnr > 35, (h, w, psnr)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_wait_out_of_order_is_refused(device):
    from hanrt.errors import UsageError
    from hanrt_export.torch_stream import TorchStreamProcessor

    with TorchStreamProcessor(make_tiny_han(), device=device, slots=1) as proc:
        img = _frames(1)[0].image
        s = proc.submit(img)
        with pytest.raises(UsageError):
            proc.submit(img)
        proc.wait(s)
        with pytest.raises(UsageError):
            proc.wait(s)
