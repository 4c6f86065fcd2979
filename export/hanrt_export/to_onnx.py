"""PyTorch model -> ONNX, with the model description in the metadata and a parity gate.

HAN is the flagship; any architecture of the model registry (:mod:`hanrt_export.models`: spandrel's
super-resolution models) exports through the same steps. Every exported graph reads and writes
0..255 (0..1 models are wrapped by :func:`hanrt_export.models.for_export`); graphs of models with
shape rules (``min_tile``, ``tile_multiple``) are checked at a second input shape as well, since a
traced graph bakes Python control flow on shapes.

Exporter choice: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``).
HAN's forward is static Python (no data-dependent control flow), so tracing is exact; the
legacy exporter exported full HAN in ~5 s against ~38 s for the dynamo exporter (figures from the
project plan, torch 2.13 CPU), with
the same parity (~3e-4 max abs on 0..255 under ONNX Runtime), and its dynamic-axes output
needs no post-processing. If a future torch drops it, the
dynamo exporter needs ``dynamic_shapes`` for batch/height/width (not wired yet).

Steps: build the wrapper for the I/O kind -> export to a temporary file beside the output ->
onnxslim -> write ``metadata_props`` -> parity gate (ONNX Runtime CPU vs PyTorch) -> precision
pass (optional) -> TensorRT lint gate (:mod:`hanrt_export.trt_lint`, on the final graph) -> rename
into place. The output appears only when the gates pass.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from hanrt.errors import MissingDependencyError, ModelError, OutputError, ParityError, UsageError
from hanrt.io.atomic import atomic_output, check_output_path
from hanrt.model_info import ModelInfo
from hanrt.tiling import legal_tile

from . import __version__
from .han import HAN
from .metadata import set_model_info_props
from .models import LoadedModel, for_export, han_loaded

log = logging.getLogger(__name__)

__all__ = ["ExportOptions", "ExportResult", "export_onnx", "Uint8IO", "parity_check", "trt_lint_gate", "model_info_for"]

PARITY_TOL = 1e-2  # max abs difference on the 0..255 scale


class Uint8IO(nn.Module):
    """Wrap HAN with uint8 NHWC I/O: cast then transpose in; clamp, round, transpose, then cast out.

    The casts sit at the very edges so that UINT8 exists only as the graph's input and output,
    each touching nothing but a Cast: the only UINT8 TensorRT accepts (TensorRT issue #3985;
    :mod:`hanrt_export.trt_lint` checks the final file).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x.to(torch.float32).permute(0, 3, 1, 2))
        return torch.round(torch.clamp(y, 0.0, 255.0)).permute(0, 2, 3, 1).to(torch.uint8)


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    opset: int = 17
    io: Literal["float", "uint8"] = "float"
    verify: bool = True
    simplify: bool = True
    parity_shape: tuple[int, int] = (48, 40)  # H, W of the random parity input
    # Architectures whose traced graph is right only at its traced size (a shifted-window mask made
    # in Python: SwinIR, HAT...) are exported with this fixed tile side (static H and W); the runtime
    # then runs fixed tiles (ModelInfo.fixed_tile).
    fixed_tile: int = 128
    seed: int = 0
    # TensorRT lint on the final graph: "refuse" a graph with findings (the default), or only
    # "record" them in the metadata with a warning (graphs that are not for TensorRT by design:
    # --int8-activations uint8). ``trt_note`` says why, for the record.
    trt_lint: Literal["refuse", "record"] = "refuse"
    trt_note: str = ""


@dataclass(frozen=True)
class ExportResult:
    path: str
    info: ModelInfo
    export_s: float
    max_abs_diff: float | None
    mean_abs_diff: float | None
    nodes: int
    parity_note: str = ""
    trt_findings: tuple = ()  # hanrt_export.trt_lint.Finding, recorded with trt_lint="record"


def _check_output_path(out: Path, overwrite: bool) -> None:
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--output must end in .onnx, got {str(out)!r}.")
    parent = check_output_path(out, overwrite=overwrite)
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {str(out)!r}: folder {str(parent)!r} is not writable.")


def parity_check(path: str | os.PathLike, torch_module: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Run ``x`` through ONNX Runtime (CPU) and PyTorch; return (max, mean) abs difference."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError(
            "the parity gate needs onnxruntime: pip install 'hanrt[export]' (or pass --no-verify)."
        ) from exc
    so = ort.SessionOptions()
    so.log_severity_level = 4  # failures come back as exceptions; keep ORT's own log quiet
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = sess.run(None, {name: x.numpy()})[0]
    with torch.no_grad():
        ref = torch_module(x.clone()).numpy()
    if got.shape != ref.shape:
        raise ParityError(f"ONNX output shape {got.shape} differs from PyTorch {ref.shape}.")
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return float(d.max()), float(d.mean())


def export_onnx(
    model: HAN | LoadedModel,
    output: str | os.PathLike,
    *,
    options: ExportOptions = ExportOptions(),
    source_sha256: str = "",
    source: str = "",
    overwrite: bool = False,
    precision_hook=None,
) -> ExportResult:
    """Export ``model`` to ``output`` (.onnx). Raises ParityError when the gate fails.

    ``precision_hook(tmp_path, info) -> info`` (optional) rewrites the temporary graph in place
    (FP16/INT8 passes, :mod:`hanrt_export.precision`) after the FP32 graph passed the parity gate;
    the hook writes its own metadata and runs its own gate (raising ParityError to refuse).
    """
    out = Path(output)
    _check_output_path(out, overwrite)
    if options.opset < 17:
        raise UsageError(f"--opset must be >= 17 (LayerNorm-era ops and dynamic shapes), got {options.opset}.")
    if not isinstance(model, (LoadedModel, HAN)):
        raise UsageError(f"export_onnx takes a HAN or a hanrt_export.models.LoadedModel, got {type(model).__name__}.")
    loaded = model if isinstance(model, LoadedModel) else han_loaded(model)
    net = for_export(loaded)
    wrapped: nn.Module = Uint8IO(net).eval() if options.io == "uint8" else net
    n_colors = loaded.n_colors
    # Other architectures trace at 64x64 (a multiple of every window size in use: a padding to the
    # window that the trace bakes in is then zero) unless told otherwise.
    shape = options.parity_shape if loaded.arch == "HAN" or options.parity_shape != (48, 40) else (64, 64)
    h, w = (legal_tile(v, loaded.min_tile, loaded.tile_multiple) for v in shape)
    gen = torch.Generator().manual_seed(options.seed)
    example = _example(options.io, 1, n_colors, h, w, gen)
    if options.io == "uint8":
        dyn = {"input": {0: "batch", 1: "height", 2: "width"},
               "output": {0: "batch", 1: "out_height", 2: "out_width"}}
    else:
        dyn = {"input": {0: "batch", 2: "height", 3: "width"},
               "output": {0: "batch", 2: "out_height", 3: "out_width"}}

    with atomic_output(out, overwrite=overwrite) as tmp:
        import onnx

        t0 = time.perf_counter()
        m = _trace(wrapped, example, tmp, opset=options.opset, dyn=dyn, simplify=options.simplify)
        info = model_info_for(loaded, io=options.io, source_sha256=source_sha256, source=source,
                              opset=options.opset)
        tol = PARITY_TOL if options.io == "float" else 1.0
        second: tuple[float, float] | None = None
        if loaded.arch != "HAN":
            # Measured shape rules (a trace bakes Python control flow on shapes): the tile multiple at
            # which the graph still matches PyTorch, else a fixed tile; then whether batches work.
            try:
                mult, second = measure_tile_multiple(tmp, wrapped, loaded, (h, w), io=options.io, tol=tol, gen=gen)
                info = info.with_(tile_multiple=mult, min_tile=legal_tile(info.min_tile, 1, mult))
                bh, bw = h + mult, w + 2 * mult
            except ModelError as exc:
                t = legal_tile(options.fixed_tile, loaded.min_tile, loaded.tile_multiple)
                example = _example(options.io, 1, n_colors, t, t, gen)
                m = _trace(wrapped, example, tmp, opset=options.opset, simplify=options.simplify,
                           dyn={"input": {0: "batch"}, "output": {0: "batch"}})
                log.warning("%s: %s Exported with a fixed %dx%d tile instead (static height and width).",
                            loaded.arch, exc, t, t)
                info = info.with_(fixed_tile=t, min_tile=t, tile_multiple=t)
                bh = bw = t
            d2 = _try_parity(tmp, wrapped, _example(options.io, 2, n_colors, bh, bw, gen))
            if d2 is None or not d2[0] <= tol:
                # e.g. SwinIR's window_reverse takes int() of a traced size: batch 1 baked in
                log.warning("%s: the graph is wrong for batches of 2 (%s); it is exported for batch 1.",
                            loaded.arch, "fails" if d2 is None else f"max abs {d2[0]:.3g}")
                m = _trace(wrapped, example, tmp, opset=options.opset, simplify=options.simplify,
                           dyn={} if info.fixed_tile else {k: {a: n for a, n in v.items() if a} for k, v in dyn.items()})
                info = info.with_(max_batch=1)
                second = parity_check(tmp, wrapped, _example(options.io, 1, n_colors, bh, bw, gen))
            elif second is not None:
                second = (max(second[0], d2[0]), max(second[1], d2[1]))
            else:
                second = d2
        _set_metadata(m, info)
        onnx.save(m, str(tmp))
        export_s = time.perf_counter() - t0
        max_d = mean_d = None
        note = ""
        if options.verify:
            max_d, mean_d = parity_check(tmp, wrapped, example)
            if second is not None:
                max_d, mean_d = max(max_d, second[0]), max(mean_d, second[1])
            log.info("parity: max abs %.3g, mean abs %.3g (tolerance %.3g)", max_d, mean_d, tol)
            if options.io == "uint8":
                note = "uint8 outputs may differ by 1 where the float output lies at a rounding boundary"
            if not max_d <= tol:
                raise ParityError(
                    f"parity gate failed: ONNX Runtime vs PyTorch max abs difference {max_d:.4g} "
                    f"(mean {mean_d:.4g}) exceeds {tol:g} on the 0..255 scale; {out.name} was not written."
                )
        if precision_hook is not None:
            # The FP32 graph passed its gate; the precision pass rewrites it and runs its own gate.
            info = precision_hook(tmp, info)
            export_s = time.perf_counter() - t0
        info, findings = trt_lint_gate(tmp, info, options=options, name=out.name)
        nodes = len(onnx.load(str(tmp), load_external_data=False).graph.node)
    return ExportResult(str(out), info, export_s, max_d, mean_d, nodes, note, tuple(findings))


def _example(io: str, n: int, c: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A random graph input: uint8 NHWC 0..255 or float32 NCHW 0..255."""
    if io == "uint8":
        return torch.randint(0, 256, (n, h, w, c), dtype=torch.uint8, generator=gen)
    return torch.rand((n, c, h, w), generator=gen) * 255.0


def _trace(module: nn.Module, example: torch.Tensor, path: Path, *, opset: int, dyn: dict, simplify: bool):
    """Export ``module`` at ``example`` to ``path`` (TorchScript exporter), onnxslim it; return the model."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["input"], output_names=["output"],
                          opset_version=opset, dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    m = onnx.load(str(path))
    if simplify:
        try:
            import onnxslim
        except ImportError as exc:
            raise MissingDependencyError("simplification needs onnxslim: pip install 'hanrt[export]'.") from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = onnxslim.slim(m)
    onnx.save(m, str(path))
    return m


#: Tile multiples tried by :func:`measure_tile_multiple` (window sizes in use are powers of two <= 64).
MULTIPLES = (1, 2, 4, 8, 16, 32, 64)


def measure_tile_multiple(path: str | os.PathLike, module: nn.Module, loaded: LoadedModel, base: tuple[int, int], *,
                          io: str, tol: float, gen: torch.Generator) -> tuple[int, tuple[float, float]]:
    """The smallest tile multiple at which the traced graph at ``path`` still matches PyTorch.

    A trace bakes Python control flow on shapes (a model padding its input to a window multiple
    computes the padding in Python): the graph is then right only at sizes congruent to the traced
    one. Measured, never assumed: for m = the model's own multiple x 1, 2, 4, ... up to 64, the graph
    and PyTorch run (H + m) x (W + 2m); the first m whose shapes agree and whose max
    abs difference is within ``tol`` is the multiple (batch 1; batches are checked by the caller). Returns ``(m, (max, mean) difference there)``;
    :class:`ModelError` when none works (the graph does not generalise: it is refused).
    """
    h, w = base
    tried = []
    for m in sorted({loaded.tile_multiple * k for k in MULTIPLES if loaded.tile_multiple * k <= 64}):
        shp = (h + m, w + 2 * m)
        d = _try_parity(path, module, _example(io, 1, loaded.n_colors, h + m, w + 2 * m, gen), tried, f"x{m}")
        if d is None:
            continue
        if d[0] <= tol:
            log.info("%s: the graph matches PyTorch at sizes that are multiples of %d (max abs %.3g at %s)",
                     loaded.arch, m, d[0], shp)
            return m, d
        tried.append(f"x{m}: max abs {d[0]:.3g}")
    raise ModelError(
        f"{loaded.arch}: the exported graph matches PyTorch only at the traced size {h}x{w}, at no tile "
        f"multiple up to 64 ({'; '.join(tried)}); hanrt cannot run it on other sizes and refuses it.")


def _try_parity(path, module: nn.Module, x: torch.Tensor, tried: list | None = None,
                label: str = "") -> tuple[float, float] | None:
    """:func:`parity_check`, or ``None`` when the graph cannot run ``x`` (noted in ``tried``)."""
    try:
        return parity_check(path, module, x)
    except Exception as exc:  # noqa: BLE001 -- ONNX Runtime's own exception types (Fail, InvalidArgument...)
        if not (isinstance(exc, ParityError) or type(exc).__module__.startswith("onnxruntime")):
            raise
        if tried is not None:
            tried.append(f"{label}: {str(exc).splitlines()[0][:120]}")
        return None


def model_info_for(loaded: LoadedModel, *, io: str = "float", source_sha256: str = "", source: str = "",
                   opset: int = 0) -> ModelInfo:
    """The FP32 :class:`ModelInfo` of a graph exported from ``loaded`` (HAN: exactly as before, plus
    ``arch``; other architectures: graph I/O 0..255, the network's own range in ``network_range``)."""
    common = dict(scale=loaded.scale, io=io, n_colors=loaded.n_colors, precision="fp32", arch=loaded.arch,
                  min_tile=loaded.min_tile, tile_multiple=loaded.tile_multiple, source_sha256=source_sha256,
                  source=os.path.basename(source) if source else "", hanrt_version=__version__, opset=opset)
    if loaded.arch == "HAN":
        return ModelInfo(value_range=tuple(loaded.value_range), hyperparameters=loaded.hyperparameters,
                         csam="conv2d" if loaded.model.csa.conv2d_form else "conv3d", **common)
    return ModelInfo(value_range=(0.0, 255.0), network_range=tuple(loaded.value_range),
                     hyperparameters=loaded.hyperparameters, csam="", **common)


def trt_lint_gate(path: str | os.PathLike, info: ModelInfo, *, options: ExportOptions = ExportOptions(),
                  name: str = "the graph") -> tuple[ModelInfo, list]:
    """Lint the graph at ``path`` for TensorRT and record the result in its metadata, in place.

    With ``options.trt_lint == "refuse"`` any finding raises :class:`ModelError` listing them
    (the caller's temporary file is then discarded: nothing is written). With ``"record"`` the
    findings are logged as a warning and the graph is marked ``trt_buildable=False``.
    """
    import onnx

    from .trt_lint import format_findings, lint, summary

    m = onnx.load(str(path))
    findings = lint(m)
    if findings and options.trt_lint == "refuse":
        raise ModelError(f"TensorRT lint gate failed, {name} was not written: {format_findings(findings)}")
    if findings:
        counts = ", ".join(f"{k} x{v}" for k, v in summary(findings).items())
        text = (f"not TensorRT-buildable{' by design (' + options.trt_note + ')' if options.trt_note else ''}: "
                f"{len(findings)} lint finding(s) ({counts}); runs on ONNX Runtime")
        log.warning("%s: %s", name, text)
    else:
        from .trt_ops import TRT_VERSION

        text = f"lint clean against TensorRT {TRT_VERSION}'s ONNX operator table (not a build)"
    info = info.with_(trt_buildable=not findings, trt_lint=text)
    _set_metadata(m, info)
    onnx.save(m, str(path))
    return info, findings


def _set_metadata(m, info: ModelInfo) -> None:
    set_model_info_props(m, info)
    m.producer_name = "hanrt"
    m.producer_version = info.hanrt_version
