"""Other super-resolution architectures through the model registry (hanrt_export.models + spandrel).

Each architecture is built tiny with random weights by instantiating spandrel's class directly, its
state dict saved as a user's ``.pth`` would be, then loaded back through the registry (detection by
spandrel), exported with the parity gate (ONNX Runtime vs PyTorch at two shapes) and the TensorRT
lint, made FP16 by the measured rules (checked in real FP16 arithmetic by ReferenceEvaluator), and
run by the runtime's Upscaler on an image whose sides break the model's tile rules.
"""

from __future__ import annotations

import functools
import math
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hanrt.errors import CheckpointError, MissingDependencyError, ParityError, UsageError  # noqa: E402
from hanrt_export.models import spandrel_available  # noqa: E402

_WHY = spandrel_available()
# .ci/run's second step sets this where spandrel and a matching torchvision are installed: there a
# missing spandrel must fail these tests, not skip them
_REQUIRED = os.environ.get("HANRT_REQUIRE_SPANDREL") == "1"
needs_spandrel = pytest.mark.skipif(bool(_WHY) and not _REQUIRED, reason=f"spandrel unavailable: {_WHY}")


def _tiny(name: str):
    """Tiny random instance of spandrel's class for ``name`` (the arch id spandrel detects)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
        return _build(name)


def _build(name: str):
    import torch

    torch.manual_seed(0)
    if name == "ESRGAN":
        from spandrel.architectures.ESRGAN import ESRGAN
        return ESRGAN(num_filters=8, num_blocks=1, scale=4)
    if name == "Compact":
        from spandrel.architectures.Compact import Compact
        return Compact(num_feat=8, num_conv=2, upscale=4)
    if name == "SwinIR":
        from spandrel.architectures.SwinIR import SwinIR
        return SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2.0,
                      upscale=2, upsampler="pixelshuffle", resi_connection="1conv")
    if name == "HAT":
        from spandrel.architectures.HAT import HAT
        return HAT(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, compress_ratio=3,
                   squeeze_factor=4, mlp_ratio=2.0, upscale=2, num_feat=8)
    if name == "OmniSR":
        from spandrel.architectures.OmniSR import OmniSR
        return OmniSR(num_feat=16, block_num=1, window_size=4, res_num=1, up_scale=2)
    if name == "SPAN":
        from spandrel.architectures.SPAN import SPAN
        return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)
    if name == "DAT":
        from spandrel.architectures.DAT import DAT
        return DAT(img_size=16, embed_dim=32, split_size=[2, 4], depth=[1], num_heads=[2], expansion_factor=2.0,
                   upscale=2)
    if name == "RealCUGAN":
        from spandrel.architectures.RealCUGAN import UpCunet2x
        return UpCunet2x()  # RealCUGAN has no size hyperparameters: 1.3 M parameters
    if name == "RCAN":
        from spandrel.architectures.RCAN import RCAN
        return RCAN(scale=2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4)
    raise KeyError(name)


ARCHS = ["ESRGAN", "Compact", "SwinIR", "HAT", "OmniSR", "SPAN", "DAT", "RealCUGAN", "RCAN"]
# Measured on the tiny random-weight configurations (README: "Other architectures"):
FP16_REFUSED = {"SPAN"}  # its FP16 graph is < 50 dB from FP32 on the all-zero input: the gate refuses
NO_REFERENCE = {"RealCUGAN"}  # Pad with negative pads: onnx's ReferenceEvaluator cannot run it
SLOW = {"RealCUGAN", "DAT", "HAT", "SwinIR", "OmniSR", "ESRGAN", "SPAN"}  # > a few seconds on a 2-core CPU (FP16 check in numpy)


def _save(model, path):
    import torch

    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def arch_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("archs")


@needs_spandrel
@pytest.mark.parametrize("name", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in ARCHS])
def test_arch_exports_through_the_registry(name, arch_dir, calib_photos):
    import onnx

    from hanrt.model_info import read_model_info
    from hanrt.upscaler import Upscaler
    from hanrt_export import precision as P
    from hanrt_export.models import load_model
    from hanrt_export.to_onnx import ExportOptions, export_onnx, trt_lint_gate

    ckpt = _save(_tiny(name), arch_dir / f"{name}.pth")
    loaded = load_model(ckpt)
    assert loaded.arch == name and loaded.loader == "spandrel" and loaded.value_range == (0.0, 1.0)
    out = arch_dir / f"{name}.onnx"
    opts = ExportOptions(io="float", fixed_tile=32)  # graphs right only at their traced size: 32x32 tiles
    res = export_onnx(loaded, out, options=opts, source_sha256=loaded.sha256, source=str(ckpt))
    info = read_model_info(out)
    assert info.arch == name and info.scale == loaded.scale and info.value_range == (0.0, 255.0)
    assert info.network_range == (0.0, 1.0)
    # spandrel's rules, made stricter where the traced graph needs it (measured by the export)
    assert info.tile_multiple % loaded.tile_multiple == 0 and info.min_tile >= loaded.min_tile
    assert info.min_tile % info.tile_multiple == 0
    assert res.max_abs_diff is not None and res.max_abs_diff <= 1e-2  # parity on 0..255, two shapes
    assert info.trt_buildable is True, info.trt_lint

    # FP16 by measurement, on a copy of the FP32 graph (the pass export_onnx's precision hook runs;
    # the hook's own wiring is tested on HAN and on SPAN's refusal in test_fp16_refusal_writes_nothing):
    # the gate is ReferenceEvaluator (real FP16) on extreme inputs, then the TensorRT lint.
    crops = P.photo_crops(calib_photos, n=2, size=max(32, loaded.min_tile))
    fp16 = arch_dir / f"{name}_fp16.onnx"
    shutil.copyfile(out, fp16)
    fp16_opts = P.Fp16Options(calib_size=max(16, loaded.min_tile))
    if name in FP16_REFUSED:  # measured: the gate refuses it
        with pytest.raises(ParityError, match="FP16 gate failed"):
            P.make_fp16(fp16, info, calib=crops, calibration="2 crops", options=fp16_opts)
        fp16 = None
    else:
        info16 = P.make_fp16(fp16, info, calib=crops, calibration="2 crops", options=fp16_opts)
        info16, findings = trt_lint_gate(fp16, info16)
        assert info16.precision == "fp16" and info16.trt_buildable is True and not findings
        assert read_model_info(fp16).precision == "fp16"
    side = info.fixed_tile or max(16, info.min_tile)
    x = P.to_graph_input(crops[0][:side, :side], "float")
    if fp16 is not None and name not in NO_REFERENCE:
        ref = P._ort_run(onnx.load(str(out)), x)
        got = P.reference_run(onnx.load(str(fp16)), x)
        assert np.all(np.isfinite(got)) and P.psnr(got, ref) >= 40.0
    elif fp16 is not None:
        assert "ReferenceEvaluator cannot run this graph" in read_model_info(fp16).precision_notes

    # the runtime runs it like HAN; a requested tile breaking the rules is rounded up
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (loaded.min_tile + 5, loaded.min_tile + 11, 3), dtype=np.uint8)
    with Upscaler(out, backend="ort-cpu", tile=None) as up:
        whole = up.upscale(img)
    assert whole.shape == (img.shape[0] * loaded.scale, img.shape[1] * loaded.scale, 3)


@needs_spandrel
def test_fp16_refusal_writes_nothing(arch_dir, calib_photos):
    """export_onnx with the FP16 hook on SPAN (whose tiny FP16 graph fails the gate): no file."""
    from hanrt_export import precision as P
    from hanrt_export.models import load_model
    from hanrt_export.to_onnx import export_onnx

    loaded = load_model(_save(_tiny("SPAN"), arch_dir / "span_gate.pth"))
    hook = functools.partial(P.make_fp16, calib=P.photo_crops(calib_photos, n=2, size=32), calibration="2 crops",
                             options=P.Fp16Options(calib_size=16))
    out = arch_dir / "span_gate_fp16.onnx"
    with pytest.raises(ParityError, match=r"FP16 gate failed: .*on the 'zeros' input .*ReferenceEvaluator"):
        export_onnx(loaded, out, precision_hook=hook)
    assert not out.exists()


@needs_spandrel
def test_uint8_io_and_int8_for_a_conv_arch(arch_dir, calib_photos):
    from hanrt_export import precision as P
    from hanrt_export.models import load_model
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    loaded = load_model(_save(_tiny("Compact"), arch_dir / "compact_u8.pth"))
    res = export_onnx(loaded, arch_dir / "compact_u8.onnx", options=ExportOptions(io="uint8"))
    assert res.info.io == "uint8" and res.max_abs_diff <= 1.0 and res.info.trt_buildable
    crops = P.photo_crops(calib_photos, n=4, size=24)
    hook = functools.partial(P.make_int8, calib=crops, calibration="4 crops",
                             options=P.Int8Options(calib_size=24, calib_count=4))
    r8 = export_onnx(loaded, arch_dir / "compact_int8.onnx", options=ExportOptions(), precision_hook=hook)
    assert r8.info.precision == "int8" and r8.info.trt_buildable
    assert "QuantizeLinear" in r8.info.precision_notes or "Quantize" in r8.info.precision_notes


@needs_spandrel
def test_cli_export_info_and_int8_refusal(arch_dir, capsys, calib_dir):
    from hanrt.cli import main

    ck = _save(_tiny("SwinIR"), arch_dir / "swinir_cli.pth")
    out = arch_dir / "swinir_cli.onnx"
    assert main(["export", "--checkpoint", str(ck), "--output", str(out)]) == 0
    said = capsys.readouterr().out
    assert "SwinIR x2" in said and "via spandrel" in said and "tiles >= 16" in said
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "arch         SwinIR" in text and "input sides >= 16" in text and "network computes in 0..1" in text
    # hanrt upscale runs it like HAN; --tile 30 breaks the graph's rules (multiples of 4): rounded up to 32
    from PIL import Image

    src, dst = arch_dir / "in.png", arch_dir / "out.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(src)
    assert main(["upscale", str(src), "--model", str(out), "-o", str(dst), "--backend", "ort-cpu",
                 "--tile", "30", "--margin", "4"]) == 0
    with Image.open(dst) as im:
        assert im.size == (140, 90)
    capsys.readouterr()
    rc = main(["export", "--checkpoint", str(ck), "--output", str(arch_dir / "swinir_int8.onnx"),
               "--precision", "int8", "--calib", str(calib_dir)])
    assert rc != 0 and "not offered for SwinIR" in capsys.readouterr().err
    rc = main(["export", "--checkpoint", str(ck), "--output", str(arch_dir / "swinir_csam.onnx"), "--csam", "conv2d"])
    assert rc != 0 and "--csam is HAN's" in capsys.readouterr().err
    assert not (arch_dir / "swinir_int8.onnx").exists()


@needs_spandrel
def test_registry_refuses_what_cannot_work(tmp_path):
    from spandrel.architectures.Compact import Compact

    from hanrt_export.models import load_model

    one = _save(Compact(num_feat=8, num_conv=1, upscale=1), tmp_path / "denoise_1x.pth")
    with pytest.raises(CheckpointError, match="1x restoration model: it does not upscale"):
        load_model(one)
    five = _save(Compact(num_feat=8, num_conv=1, upscale=5), tmp_path / "x5.pth")
    with pytest.raises(CheckpointError, match=r"Compact x5; hanrt exports scales 2, 3, 4, 8"):
        load_model(five)
    import torch

    junk = tmp_path / "junk.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, junk)
    with pytest.raises(CheckpointError, match="recognises none of its architectures"):
        load_model(junk)


def test_han_still_loads_strictly_through_the_registry(tiny_checkpoint, tiny_han):
    """HAN goes through the built-in loader (spandrel or not): same model, same strict errors."""
    import torch

    from hanrt_export.models import load_model

    loaded = load_model(tiny_checkpoint)
    assert loaded.arch == "HAN" and loaded.loader == "builtin" and loaded.min_tile == 1
    sd = tiny_han.state_dict()
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, sd[k])


def test_registry_names_the_extra_without_spandrel(tmp_path, monkeypatch):
    import sys

    import torch

    from hanrt_export.models import load_model

    monkeypatch.setitem(sys.modules, "spandrel", None)  # import spandrel -> ImportError, as when absent
    p = tmp_path / "esrgan_like.pth"
    torch.save({"conv_first.weight": torch.zeros(8, 3, 3, 3)}, p)
    with pytest.raises(CheckpointError, match=r"pip install 'hanrt\[export,spandrel\]'") as ei:
        load_model(p)
    assert "looks like ESRGAN" in str(ei.value)
    assert isinstance(ei.value.__cause__, MissingDependencyError)


def test_legal_tile_rounds_to_the_model_rules():
    from hanrt.tiling import legal_tile, plan_tiles

    assert legal_tile(100, 16, 8) == 104 and legal_tile(5, 16, 8) == 16 and legal_tile(64, 1, 1) == 64
    with pytest.raises(UsageError):
        legal_tile(0)
    plan = plan_tiles(50, 70, tile=legal_tile(30, 16, 8), margin=4, scale=2, min_tile=16, tile_multiple=8)
    assert plan.tile_h % 8 == 0 and plan.tile_w % 8 == 0 and math.isfinite(plan.overhead)


@needs_spandrel
def test_bench_counts_flops_of_any_architecture(arch_dir):
    """hanrt bench's cost model: HAN analytic, others by torch.utils.flop_counter on the PyTorch model."""
    from hanrt_bench.bench import resolve_model
    from hanrt_bench.flops import CountedCost, UncountedCost, macs_of

    ck = _save(_tiny("Compact"), arch_dir / "compact_bench.pth")  # 8 features, 2 body convs, x4
    src = resolve_model(str(ck), work_dir=str(arch_dir))
    try:
        assert isinstance(src.shape, CountedCost) and src.shape.scale == 4 and "Compact x4" in src.label
        # SRVGGNetCompact per input pixel: 3->8 conv, two 8->8 convs, 8->3*4*4 conv (all 3x3)
        per_px = 9 * 3 * 8 + 2 * 9 * 8 * 8 + 9 * 8 * 48
        assert macs_of(src.shape, 16, 20) == per_px * 16 * 20
        graph = src.path
        plain = resolve_model(graph)  # the graph alone: no PyTorch model to count on
        assert isinstance(plain.shape, UncountedCost) and math.isnan(macs_of(plain.shape, 8, 8))
        with_ck = resolve_model(graph, checkpoint=str(ck))
        assert macs_of(with_ck.shape, 16, 20) == per_px * 16 * 20
    finally:
        src.close()


def _baked_model(batch_bug: bool = False):
    """A tiny x2 model whose trace bakes its input size (a size-dependent bias made in Python, like
    SwinIR's shifted-window mask) and, with ``batch_bug``, its batch (``int()`` of a traced size)."""
    import torch
    from torch import nn

    class Baked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 12, 3, padding=1)
            self.up = nn.PixelShuffle(2)

        def forward(self, x):
            b, _, h, w = x.shape
            bias = torch.arange(int(h) * int(w), dtype=x.dtype).reshape(1, 1, int(h), int(w)) / (h * w)
            y = self.conv(x) + bias
            if batch_bug:
                y = y.reshape(int(b), 12, h, w)
            return self.up(y)

    return Baked().eval()


@pytest.mark.parametrize("batch_bug", [False, True])
def test_graph_right_only_at_its_traced_size_gets_a_fixed_tile(tmp_path, batch_bug):
    from hanrt.model_info import read_model_info
    from hanrt.upscaler import Upscaler
    from hanrt_export.models import LoadedModel
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    loaded = LoadedModel(model=_baked_model(batch_bug), arch="Baked", scale=2, value_range=(0.0, 1.0), loader="test")
    out = tmp_path / "baked.onnx"
    res = export_onnx(loaded, out, options=ExportOptions(fixed_tile=24))
    info = read_model_info(out)
    assert (info.fixed_tile, info.min_tile, info.tile_multiple) == (24, 24, 24) and res.max_abs_diff <= 1e-2
    assert info.max_batch == (1 if batch_bug else 0)
    img = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    with Upscaler(out, backend="ort-cpu", tile=64, margin=2, batch=4) as up:
        assert up.plan(30, 50).tile_h == 24 and up.batch == (1 if batch_bug else 4)
        assert up.upscale(img).shape == (60, 100, 3)
