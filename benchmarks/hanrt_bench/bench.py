"""``hanrt bench``: hanrt and its baselines measured in one run on one machine.

One run = environment record + device peak + each baseline once + hanrt over the suite's sweep,
all on the same input frame. Every row carries:

- latency statistics (ms), frames/s and output megapixels/s;
- ``useful_gflop``: FLOPs of the model on the frame itself (:mod:`hanrt_bench.flops`), and the
  achieved ``gflops`` = useful FLOPs / mean latency, and ``frac_peak`` = gflops / measured peak;
- ``executed_gflop``: FLOPs actually run, margins, overlaps and padding of tiles included;
  ``tiling_overhead`` = executed / useful (the price of tiling, separate from backend speed);
- ``compute_ms``: time inside the backend (the ``compute`` stage: for hanrt, host time in the
  backend's ``submit``/``wait``, i.e. for asynchronous backends the time the host waited for the
  device); and ``backend_gflops`` = executed FLOPs / compute time (the backend's own speed);
- ``stages_ms``: mean ms per frame of each timed stage. Baselines: ``preprocess``, ``h2d``,
  ``compute``, ``d2h``, ``stitch``; hanrt: the Upscaler's own ``prepare``, ``gather``,
  ``compute``, ``stitch``, ``finish`` (:data:`hanrt.upscaler.STAGES`); both with ``decode`` and
  ``encode`` when the input is a file. Stages do not overlap; the rest of ``mean_ms`` is untimed
  overhead;
- ``speedup_vs_<baseline>`` = baseline mean latency / this mean latency (> 1: faster).

Input: a synthetic frame of the suite's size (speed does not depend on content) or an image
file; with a file, each iteration also decodes it and encodes the output to PNG in memory
(``decode``/``encode`` stages), as an end-to-end user would.
"""

from __future__ import annotations

import io
import logging
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hanrt.errors import HanrtError, MissingDependencyError, UsageError
from hanrt.io.images import read_rgb8

from .baselines import TORCH_METHODS, HanrtMethod, HanrtSettings, chop_pieces
from .flops import CountedCost, HANShape, UncountedCost, macs_of
from .latency import Measurement, StageTimer, measure
from .suite import Config, Suite

log = logging.getLogger(__name__)

__all__ = ["ModelSource", "resolve_model", "synthetic_frame", "BenchResult", "run_bench", "precision_path"]

_RANDOM = re.compile(r"^random:(?:(full)|(\d+)x(\d+)x(\d+))(?:@x?(\d))?$")


@dataclass
class ModelSource:
    """What is benchmarked: hanrt's model file, the PyTorch model for baselines (or why not), cost shape."""

    label: str
    path: str  # the FP32 .onnx / .plan hanrt runs
    shape: HANShape | CountedCost | UncountedCost  # the cost model (HAN: analytic; others: counted)
    torch_model: Any = None
    torch_missing: str = ""
    tmpdir: Any = None
    checkpoint: str | None = None  # what hanrt's torch backend runs
    onnx_missing: str = ""  # why there is no ONNX graph (path is then "")

    def close(self) -> None:
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None


def _recorded_margin(source: ModelSource) -> int:
    """The margin hanrt tiles ``source``'s graph with by default: the one recorded in it, else
    :data:`~hanrt.model_info.DEFAULT_MARGIN` (:func:`~hanrt.model_info.resolve_margin`)."""
    from hanrt.errors import HanrtError
    from hanrt.model_info import DEFAULT_MARGIN, read_model_info, resolve_margin

    if not source.path:
        return DEFAULT_MARGIN
    try:
        return resolve_margin(None, read_model_info(source.path))[0]
    except HanrtError:  # no readable description (e.g. an engine without its sidecar): the default
        return DEFAULT_MARGIN


def _export(model: Any, out: Path) -> None:
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    export_onnx(model, out, options=ExportOptions(io="float"), overwrite=True)


def resolve_model(spec: str, *, checkpoint: str | None = None, work_dir: str | None = None) -> ModelSource:
    """Turn a MODEL argument into a :class:`ModelSource`.

    ``spec``: an ``.onnx`` graph or ``.plan`` engine (run as is; ``checkpoint`` gives the PyTorch
    baselines their model), a checkpoint ``.pt`` (exported to ONNX in a temporary folder first),
    or ``random:GxBxF`` / ``random:full`` (random weights; ``@x2`` picks the scale, default x4).
    """
    m = _RANDOM.match(spec)
    tmp = None
    if m or spec.lower().endswith((".pt", ".pth", ".safetensors")):
        from hanrt.errors import require

        require("torch", extra="export", purpose=f"benchmarking {spec}")
        import torch

        if m:
            from hanrt_export.han import HAN

            g, b, f = (10, 20, 64) if m.group(1) else (int(m.group(2)), int(m.group(3)), int(m.group(4)))
            scale = int(m.group(5) or 4)
            torch.manual_seed(0)
            model = HAN(scale=scale, n_resgroups=g, n_resblocks=b, n_feats=f, reduction=min(16, f)).eval()
            with torch.no_grad():
                model.la.gamma.fill_(0.5)
                model.csa.gamma.fill_(0.5)
            label = f"HAN x{scale} {g}x{b}x{f} (random weights)"
        else:
            # any architecture of the model registry (HAN built in, others through spandrel)
            from hanrt_export.models import load_model

            ck = load_model(spec)
            if ck.arch == "HAN":
                model = ck.model
                c = ck.config
                label = f"{Path(spec).name} (HAN x{c.scale} {c.n_resgroups}x{c.n_resblocks}x{c.n_feats})"
            else:
                return _other_arch_source(spec, ck, work_dir)
        tmp = tempfile.TemporaryDirectory(prefix="hanrt-bench-", dir=work_dir)
        onnx_path = Path(tmp.name) / "model.onnx"
        log.info("exporting %s to ONNX for hanrt (%s)", label, onnx_path)
        onnx_missing = ""
        try:
            for mod in ("onnx", "onnxslim", "onnxruntime"):
                require(mod, extra="export", purpose=f"exporting {spec} to ONNX for hanrt")
            _export(model, onnx_path)
        except ImportError as exc:  # onnx/onnxslim/onnxruntime absent: only the torch backend can run
            onnx_missing = f"no ONNX graph: exporting needs onnx, onnxslim and onnxruntime ({exc})"
            log.warning("%s; only --backend torch runs", onnx_missing)
        shape = HANShape.from_hyperparameters(model.config.to_dict())
        ckpt = spec
        if m:
            from hanrt_export.checkpoint import save_checkpoint

            ckpt = str(Path(tmp.name) / "model.pt")
            save_checkpoint(model, ckpt)
        return ModelSource(label, "" if onnx_missing else str(onnx_path), shape, torch_model=model, tmpdir=tmp,
                           checkpoint=ckpt, onnx_missing=onnx_missing)
    p = Path(spec)
    if not p.exists():
        raise UsageError(f"model {spec!r} does not exist (expected .onnx, .plan, .pt or random:GxBxF).")
    from hanrt.model_info import read_model_info

    info = read_model_info(p)
    if info.arch != "HAN":
        return _other_arch_graph(p, info, checkpoint)
    shape = HANShape.from_hyperparameters(info.hyperparameters or {"scale": info.scale}, csam=info.csam)
    label = f"{p.name} ({shape.label}, {info.precision})"
    src = ModelSource(label, str(p), shape)
    if checkpoint:
        try:
            from hanrt_export.checkpoint import load_checkpoint

            src.torch_model = load_checkpoint(checkpoint).model
            src.checkpoint = checkpoint
        except ImportError as exc:
            src.torch_missing = f"torch is not installed ({exc})"
    else:
        src.torch_missing = "MODEL is not a checkpoint and no --checkpoint was given"
    return src


_NO_TORCH_BACKEND = "hanrt's torch backend runs HAN only; other architectures run through their ONNX graph"


def _other_arch_source(spec: str, ck: Any, work_dir: str | None) -> ModelSource:
    """A non-HAN checkpoint: exported to a temporary ONNX graph; FLOPs counted on its PyTorch model."""
    from hanrt_export.models import for_export

    net = for_export(ck)  # 0..255 in and out, like the graph and the baselines' HAN
    tmp = tempfile.TemporaryDirectory(prefix="hanrt-bench-", dir=work_dir)
    onnx_path = Path(tmp.name) / "model.onnx"
    _export(ck, onnx_path)
    label = f"{Path(spec).name} ({ck.label})"
    cost = CountedCost(net, scale=ck.scale, label=ck.label, n_colors=ck.n_colors)
    return ModelSource(label, str(onnx_path), cost, torch_model=net, tmpdir=tmp, checkpoint=None,
                       torch_missing="")


def _other_arch_graph(p: Path, info: Any, checkpoint: str | None) -> ModelSource:
    """A non-HAN ``.onnx``/``.plan``: FLOPs counted on ``checkpoint``'s PyTorch model, else not counted."""
    label = f"{p.name} ({info.arch} x{info.scale}, {info.precision})"
    if not checkpoint:
        why = f"FLOPs of a {info.arch} graph are counted on its PyTorch model: pass --checkpoint"
        src = ModelSource(label, str(p), UncountedCost(scale=info.scale, label=label, why=why))
        src.torch_missing = "MODEL is not a checkpoint and no --checkpoint was given"
        return src
    from hanrt_export.models import for_export, load_model

    ck = load_model(checkpoint)
    net = for_export(ck)
    return ModelSource(label, str(p), CountedCost(net, scale=ck.scale, label=ck.label, n_colors=ck.n_colors),
                       torch_model=net, checkpoint=None)


def precision_path(model_path: str, precision: str, explicit: dict[str, str] | None = None) -> str | None:
    """The graph for ``precision``: ``explicit[precision]``, the model itself for fp32, else
    ``<stem>_<precision>.onnx`` beside it when that file exists; ``None`` when there is none."""
    if explicit and explicit.get(precision):
        return explicit[precision]
    if precision == "fp32":
        return model_path
    p = Path(model_path)
    cand = p.with_name(f"{p.stem}_{precision}{p.suffix}")
    return str(cand) if cand.exists() else None


def synthetic_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic HxWx3 uint8 frame: smooth gradients plus texture (speed is content-free)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 9.0), 128 + 100 * np.cos(y / 7.0), 128 + 60 * np.sin((x + y) / 13.0)], -1)
    img = base + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class BenchResult:
    """Everything one run produced (see :mod:`hanrt_bench.report` for the outputs)."""

    suite: Suite
    model: str
    input_hw: tuple[int, int]
    env: dict[str, Any]
    peak: dict[str, Any] | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite.name, "suite_file": self.suite.source, "model": self.model,
                "input": list(self.input_hw), "env": self.env, "peak": self.peak,
                "rows": self.rows, "skipped": self.skipped}


def _executed_macs(method: str, shape: Any, h: int, w: int, cfg: Config | None, torch_tile: tuple[int, int]) -> int:  # noqa: ARG001
    """MACs actually computed by a method (tiles with their context; pieces with their overlap)."""
    if method == "torch-eager":
        return macs_of(shape, h, w)
    if method == "torch-chop":
        return sum(macs_of(shape, ph, pw) for _, _, ph, pw in chop_pieces(h, w))
    if method == "torch-tile":
        core, pad = torch_tile
        total = 0
        for top in range(0, h, core):
            for left in range(0, w, core):
                th = min(top + core + pad, h) - max(top - pad, 0)
                tw = min(left + core + pad, w) - max(left - pad, 0)
                total += macs_of(shape, th, tw)
        return total
    raise ValueError(f"unknown method {method!r}")


def _plan_macs(shape: Any, plan: Any) -> float:
    """MACs of a hanrt tile plan: every tile at its own window shape (an exact grid's windows differ)."""
    sizes: dict[tuple[int, int], int] = {}
    for t in plan.tiles:
        hw = plan.window(t)
        sizes[hw] = sizes.get(hw, 0) + 1
    return sum(n * macs_of(shape, h, w) for (h, w), n in sizes.items())


def run_bench(
    suite: Suite,
    source: ModelSource,
    *,
    image: np.ndarray | None = None,
    image_file: str | None = None,
    peak: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
    precision_files: dict[str, str] | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Run the baselines and the hanrt sweep of ``suite`` on ``source``; see the module docstring.

    ``image``: HxWx3 uint8 (default: :func:`synthetic_frame` of ``suite.input`` when it is a size).
    ``device``: where the PyTorch baselines run (``"cpu"``, ``"cuda"``).
    """
    say = progress or (lambda s: log.info("%s", s))
    if image is None:
        if isinstance(suite.input, str):
            image_file = suite.input
            image = read_rgb8(image_file)
        else:
            image = synthetic_frame(*suite.input)
    h, w = image.shape[:2]
    s = source.shape.scale
    useful = macs_of(source.shape, h, w)
    res = BenchResult(suite, source.label, (h, w), env or {}, peak)
    peak_g = float(peak["gflops"]) if peak else float("nan")
    configs = suite.configs()
    # The naive tile loop runs the sweep's first real tile (core = tile - 2*margin, pad = margin),
    # or hanrt's defaults (the model's recorded margin, else DEFAULT_MARGIN), so its tiles have the
    # shape hanrt's have.
    tiled_cfgs = [c for c in configs if c.tile]
    from hanrt.upscaler import ENGINE_TILE

    # hanrt's default tiling has no one tile side ("auto"): the naive loop then runs ENGINE_TILE
    t_tile = tiled_cfgs[0].tile if tiled_cfgs else ENGINE_TILE
    t_margin = tiled_cfgs[0].margin if tiled_cfgs and tiled_cfgs[0].margin is not None else _recorded_margin(source)
    t_margin = min(t_margin, (t_tile - 1) // 2)
    torch_tile = (t_tile - 2 * t_margin, t_margin)
    cuda_sync = None
    if device.startswith("cuda"):
        import torch

        cuda_sync = torch.cuda.synchronize

    def step_for(method: Callable[[np.ndarray, StageTimer], np.ndarray]) -> Callable[[StageTimer], None]:
        def step(t: StageTimer) -> None:
            img = image
            if image_file:
                with t.stage("decode"):
                    img = read_rgb8(image_file)
            out = method(img, t)
            if image_file:
                from PIL import Image

                with t.stage("encode"):
                    Image.fromarray(out).save(io.BytesIO(), format="PNG")
        return step

    def add_row(meas: Measurement, method: str, cfg: Config | None, backend: str, executed: int | None = None) -> dict[str, Any]:
        if executed is None:
            executed = _executed_macs(method, source.shape, h, w, cfg, torch_tile)
        row = meas.to_dict()
        mean = meas.stats.mean_s
        row.update({
            "method": method, "backend": backend,
            "precision": cfg.precision if cfg else "fp32",
            "tile": (cfg.tile if cfg else (torch_tile[0] + 2 * torch_tile[1] if method == "torch-tile" else 0)),
            "margin": (cfg.margin if cfg else (torch_tile[1] if method == "torch-tile" else (10 if method == "torch-chop" else 0))),
            "batch": (cfg.batch if cfg else 1),
            "input_h": h, "input_w": w, "scale": s,
            "useful_gflop": 2 * useful / 1e9, "executed_gflop": 2 * executed / 1e9,
            "tiling_overhead": executed / useful,
            "gflops": 2 * useful / mean / 1e9, "frac_peak": (2 * useful / mean / 1e9) / peak_g if peak else None,
        })
        comp = meas.stages_s.get("compute")
        row["compute_ms"] = comp * 1e3 if comp else None
        # For synchronous backends "compute" is the inference itself; for asynchronous ones (TensorRT
        # slots) it is only the host's wait, so a FLOP rate from it would overstate the device.
        sync_backend = not backend or not str(backend).startswith("trt")
        row["backend_gflops"] = 2 * executed / comp / 1e9 if comp and sync_backend else None
        res.rows.append(row)
        return row

    common = dict(frames=1, out_pixels=h * w * s * s, warmup=suite.warmup, iters=suite.iters,
                  max_seconds=suite.max_seconds, sync=cuda_sync)

    # Baselines
    for name in suite.baselines:
        if source.torch_model is None:
            res.skipped.append({"method": name, "reason": source.torch_missing or "no PyTorch model"})
            say(f"skip {name}: {source.torch_missing}")
            continue
        try:
            kw: dict[str, Any] = {"device": device}
            if name == "torch-tile":
                kw.update(tile=torch_tile[0], pad=torch_tile[1])
            meth = TORCH_METHODS[name](source.torch_model, **kw)
        except MissingDependencyError as exc:
            res.skipped.append({"method": name, "reason": str(exc)})
            say(f"skip {name}: {exc}")
            continue
        say(f"measuring {name} ...")
        timer = StageTimer(cuda=device.startswith("cuda"))
        meas = measure(step_for(meth), name=name, timer=timer, **common)
        meth.close()
        r = add_row(meas, name, None, f"torch-{device}")
        say(f"  {name}: mean {r['mean_ms']:.1f} ms")

    # hanrt sweep
    measured: dict[tuple, str] = {}
    for cfg in configs:
        if cfg.backend == "torch":  # hanrt's PyTorch backend runs the checkpoint; fp16 is a run-time switch
            path = source.checkpoint if cfg.precision in ("fp32", "fp16") else None
            why = ("the torch backend needs a checkpoint (MODEL .pt, random:..., or --checkpoint)"
                   if source.checkpoint is None else "the torch backend runs fp32 and fp16 only")
        elif not source.path:
            path, why = None, source.onnx_missing
        else:
            path = precision_path(source.path, cfg.precision, precision_files)
            why = (f"no {cfg.precision} graph: export one (hanrt export --precision {cfg.precision}) "
                   f"and pass it with --{cfg.precision} or put it beside the model as *_{cfg.precision}.onnx")
        if path is None:
            res.skipped.append({"method": "hanrt", "config": cfg.label, "reason": why})
            say(f"skip hanrt [{cfg.label}]: {why}")
            continue
        try:
            meth = HanrtMethod(HanrtSettings(path, backend=cfg.backend, tile=cfg.tile, margin=cfg.margin, batch=cfg.batch,
                                             fp16=cfg.backend == "torch" and cfg.precision == "fp16"))
        except HanrtError as exc:
            res.skipped.append({"method": "hanrt", "config": cfg.label, "reason": str(exc)})
            say(f"skip hanrt [{cfg.label}]: {exc}")
            continue
        plan = meth.up.plan(h, w)
        eff = Config(cfg.backend, cfg.precision, 0 if plan.whole_image else (cfg.tile or plan.tile_h), plan.margin,
                     min(meth.up.batch, plan.count))
        key = (meth.backend_name, path, eff.precision, eff.batch,
               tuple((t.wy, t.wx, *plan.window(t)) for t in plan.tiles))  # the same tiles run the same
        if key in measured:  # e.g. batch 4 of a one-tile (whole-image) plan is batch 1 again
            meth.close()
            res.skipped.append({"method": "hanrt", "config": cfg.label, "reason": f"runs the same as [{measured[key]}]"})
            say(f"skip hanrt [{cfg.label}]: runs the same as [{measured[key]}]")
            continue
        measured[key] = cfg.label
        say(f"measuring hanrt [{cfg.label}] ...")
        try:
            meas = measure(step_for(meth), name="hanrt", timer=StageTimer(), **common)
        except HanrtError as exc:
            res.skipped.append({"method": "hanrt", "config": cfg.label, "reason": str(exc)})
            say(f"skip hanrt [{cfg.label}]: {exc}")
            meth.close()
            continue
        meth.close()
        r = add_row(meas, "hanrt", eff, meth.backend_name, _plan_macs(source.shape, plan))
        r["tiles"] = plan.count
        say(f"  hanrt [{cfg.label}]: mean {r['mean_ms']:.1f} ms")

    # Ratios against each baseline
    base = {r["method"]: r["mean_ms"] for r in res.rows if r["method"] in TORCH_METHODS}
    for r in res.rows:
        for b, ms in base.items():
            r[f"speedup_vs_{b}"] = ms / r["mean_ms"] if r["mean_ms"] > 0 else math.nan
    return res
