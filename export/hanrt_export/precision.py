"""Precision passes on an exported HAN graph: FP16 mixed precision and INT8 explicit Q/DQ.

Precision lives **in the graph** (TensorRT 11 has no FP16/INT8 builder flags; a strongly typed
network follows the graph's types), so these passes decide and record, node by node, what runs
in which type.

FP16 mixed (:func:`convert_fp16`, a hand-written pass)
    Every float tensor becomes FP16 except the nodes in an explicit FP32 set, chosen by
    :func:`decide_fp32_nodes` from these rules, each recorded with its reason. Rules 1 and 3 are
    **measured** on the graph (any architecture of :mod:`hanrt_export.models`), never read off
    HAN's structure:

    1. *Tile-growing ranges* (measured): ranges are measured on the calibration and extreme inputs
       and on the same inputs mirror-tiled to twice their sides; an output that grows with the tile
       area (a sum over the whole map) and, extrapolated, passes the limit at a 512-px tile stays
       FP32, with the nodes that read it and the layout ops that only feed FP32 nodes. On HAN this
       finds the layer-attention energy: the ``MatMul`` computing ``flat @ flat^T``, ``ReduceMax``,
       ``Expand``, ``Sub``, the ``Softmax`` reading them and the ``Transpose`` feeding the energy.
       The energy is a dot product over C*H*W values; it reaches 1e9..1e10 on 0..255 photos, far
       beyond FP16's 65504 (an all-FP16 HAN gives NaN everywhere).
    2. *Global pools* (structural, default on): the ``GlobalAveragePool`` of every channel
       attention. Its sum runs over H*W values and so also grows with the tile area; TensorRT
       does not document the accumulator type of an FP16 reduction, so the pool reads FP16 and
       reduces in FP32 (one cast per RCAB; the 1x1 squeeze/excite convolutions stay FP16).
    3. *Calibrated ranges* (data): the FP32 graph runs under ONNX Runtime on calibration crops
       (real photos plus extreme inputs); any node whose output magnitude exceeds
       ``range_limit`` (default 8192, i.e. 8x headroom under 65504) stays FP32. Convolution
       outputs do not grow with the tile size, so crops measure them; rules 1 and 2 cover the
       ops that do grow.

    Graph inputs and outputs keep their types (float32 NCHW or uint8 NHWC): casts are inserted
    at the boundaries. The result is checked honestly with :func:`reference_run`
    (``onnx.reference.ReferenceEvaluator`` computes in real FP16; ONNX Runtime's CPU provider
    silently computes FP16 graphs in FP32 and cannot reveal an overflow).

INT8 (:func:`quantize_int8`)
    ONNX Runtime ``quantize_static`` in QDQ format (explicit ``QuantizeLinear``/
    ``DequantizeLinear`` pairs, the form a strongly typed TensorRT network reads; not yet built on a
    GPU here), calibrated on crops of a
    folder of photos, per-channel symmetric INT8 weights, float biases (``QuantizeBias=False``:
    TensorRT's DequantizeLinear takes no INT32); activations symmetric INT8 by default
    (zero point 0: what TensorRT requires) or asymmetric UINT8 (ONNX Runtime CPU's U8S8 path,
    not TensorRT-buildable by design: the export records that instead of refusing). The export
    lints the result (:mod:`hanrt_export.trt_lint`). Only the 3x3 body convolutions are quantized: the layer attention, the channel
    attention's 1x1 convolutions (no compute to save), the mean shifts and the first and last
    convolutions (whose ranges set the output precision) stay FP32.

Everything here runs on the CPU (onnx, onnxruntime, numpy, Pillow); no GPU, no torch.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hanrt.errors import InputError, MissingDependencyError, ParityError, UsageError
from hanrt.io.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, list_images, read_rgb8
from hanrt.metrics import psnr
from hanrt.model_info import ModelInfo

log = logging.getLogger(__name__)

__all__ = [
    "FP16_MAX",
    "Fp16Options",
    "Fp32Decision",
    "layer_attention_nodes",
    "pool_nodes",
    "activation_ranges",
    "decide_fp32_nodes",
    "convert_fp16",
    "make_fp16",
    "reference_run",
    "extreme_inputs",
    "photo_crops",
    "load_photos",
    "to_graph_input",
    "Int8Options",
    "quantize_int8",
    "make_int8",
    "psnr",
]

FP16_MAX = 65504.0
_FLOAT = 1  # onnx.TensorProto.FLOAT
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
# Ops that take any input dtype (no cast is inserted in front of them).
_ANY_INPUT = {"Shape", "Size", "Cast", "CastLike"}
# Inputs that must stay float32 whatever the node's precision (Resize scales).
_KEEP_FP32_INPUTS = {"Resize": {2}, "Upsample": {1}}
_LAYOUT_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
_POOL_OPS = {"GlobalAveragePool", "ReduceMean", "ReduceSum", "GlobalLpPool"}


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("precision passes need onnx: pip install 'hanrt[export]'.") from exc
    return onnx


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("precision passes need onnxruntime: pip install 'hanrt[export]'.") from exc
    return ort


# --- inputs: photos, crops, extremes ----------------------------------------------------------

def load_photos(folder: str | os.PathLike, *, limit: int | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[np.ndarray]:
    """Load the images under ``folder`` (subfolders included, as `hanrt train --data` reads them; sorted by path) as HxWx3 uint8 RGB arrays.

    Read by :func:`hanrt.io.images.read_rgb8` (EXIF orientation, size guard ``max_pixels``, alpha
    dropped, 16 bits rounded to 8). Raises :class:`InputError` if the folder is missing or holds no
    readable image.
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"calibration folder {str(d)!r} does not exist or is not a folder.")
    files = list_images(d, recursive=True)
    if not files:
        raise InputError(f"calibration folder {str(d)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    out: list[np.ndarray] = []
    for p in files[:limit]:
        try:
            out.append(read_rgb8(p, max_pixels=max_pixels))
        except InputError as exc:
            raise InputError(f"calibration image {str(p)!r} cannot be read: {exc}") from None
    return out


def photo_crops(photos: Sequence[np.ndarray], *, n: int, size: int, seed: int = 0,
                downscale: Sequence[int] = (1, 4)) -> list[np.ndarray]:
    """``n`` random ``size`` x ``size`` crops (HxWx3 uint8) spread over ``photos``.

    Each photo is used at every factor of ``downscale`` (Pillow bicubic shrink; 4 makes crops
    look like the LR inputs of a x4 model); crops cycle over photos and factors.
    """
    from PIL import Image

    if not photos:
        raise UsageError("photo_crops: no photos given.")
    rng = np.random.default_rng(seed)
    sources: list[np.ndarray] = []
    for ph in photos:
        ph = _rgb(ph)
        for f in downscale:
            if f == 1:
                src = ph
            else:
                h, w = ph.shape[:2]
                src = np.asarray(Image.fromarray(ph).resize((max(1, w // f), max(1, h // f)), Image.BICUBIC))
            if min(src.shape[:2]) >= size:
                sources.append(src)
    if not sources:
        raise InputError(f"no calibration photo is at least {size}x{size} pixels.")
    crops = []
    for i in range(n):
        src = sources[i % len(sources)]
        y = int(rng.integers(0, src.shape[0] - size + 1))
        x = int(rng.integers(0, src.shape[1] - size + 1))
        crops.append(np.ascontiguousarray(src[y:y + size, x:x + size]))
    return crops


def _rgb(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3].astype(np.uint8))


def extreme_inputs(size: int = 16) -> dict[str, np.ndarray]:
    """Hard inputs for the FP16 check, HxWx3 uint8: all 0, all 255, a 1-pixel checkerboard 0/255."""
    yy, xx = np.mgrid[0:size, 0:size]
    checker = (((yy + xx) % 2) * 255).astype(np.uint8)
    return {
        "zeros": np.zeros((size, size, 3), np.uint8),
        "full255": np.full((size, size, 3), 255, np.uint8),
        "checkerboard": np.repeat(checker[..., None], 3, axis=2),
    }


def to_graph_input(img: np.ndarray, io: str) -> np.ndarray:
    """HxWx3 uint8 -> the graph's input: float32 NCHW 0..255 (``io='float'``) or uint8 NHWC."""
    a = _rgb(img)
    if io == "uint8":
        return a[None]
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None].astype(np.float32))


# --- graph helpers -----------------------------------------------------------------------------

def _ensure_names(model) -> None:
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


def _float_types(model) -> dict[str, int]:
    """Tensor name -> ONNX elem_type for every typed tensor of the graph (after shape inference)."""
    _onnx()
    from .trt_lint import tensor_types

    return tensor_types(model)


def _producers(model) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output if o}


def _consumers(model) -> dict[str, list[Any]]:
    c: dict[str, list[Any]] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            if i:
                c[i].append(n)
    return c


def layer_attention_nodes(model) -> dict[str, str]:
    """Names of the layer-attention energy nodes, with the reason each stays FP32.

    From every ``Softmax``, walks up the float inputs to the nearest ``MatMul`` (the energy
    ``flat @ flat^T``), then adds layout ops whose float outputs feed only that island.
    """
    types = _float_types(model)
    prod = _producers(model)
    cons = _consumers(model)
    out: dict[str, str] = {}
    for sm in (n for n in model.graph.node if n.op_type == "Softmax"):
        island: dict[str, Any] = {}
        stack = [(sm, 0)]
        found = False
        while stack:
            n, depth = stack.pop()
            if n.name in island:
                continue
            island[n.name] = n
            if n.op_type == "MatMul":
                found = True
                continue
            if depth >= 8:
                continue
            for t in n.input:
                if t and types.get(t) == _FLOAT and t in prod:
                    stack.append((prod[t], depth + 1))
        if not found:
            log.warning("Softmax %s is not fed by a MatMul; only the Softmax stays FP32", sm.name)
            island = {sm.name: sm}
        # layout ops that feed only the island
        changed = True
        while changed:
            changed = False
            for n in list(island.values()):
                for t in n.input:
                    p = prod.get(t)
                    if (p is None or p.name in island or p.op_type not in _LAYOUT_OPS
                            or types.get(t) != _FLOAT):
                        continue
                    users = [u for o in p.output for u in cons.get(o, [])]
                    if all(u.name in island for u in users):
                        island[p.name] = p
                        changed = True
        for name, n in island.items():
            out[name] = (f"layer-attention energy ({n.op_type}): a dot product over C*H*W values, "
                         f"~1e9..1e10 on 0..255 photos, > FP16 max 65504")
    return out


def pool_nodes(model) -> dict[str, str]:
    """Names of the pooling nodes that reduce over the spatial axes (HAN's channel attention), with
    their reason. ``ReduceMean``/``ReduceSum`` count only when they reduce a 4-D tensor over height or
    width, or when the axes or rank cannot be read (kept, to be safe): a mean over channels (a
    channel LayerNorm, as in OmniSR) sums C values whatever the tile size."""
    from onnx import numpy_helper

    from .trt_lint import _constants

    onnx = _onnx()
    try:
        vis = onnx.shape_inference.infer_shapes(model).graph
        ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in [*vis.input, *vis.value_info]
                 if vi.type.tensor_type.HasField("shape")}
    except Exception:  # noqa: BLE001 -- shape inference refuses some graphs: ranks unknown, pools kept
        ranks = {}
    consts = _constants(model)

    def spatial(n) -> bool:
        if n.op_type.startswith("Global"):
            return True
        axes = next((list(a.ints) for a in n.attribute if a.name == "axes"), None)
        if axes is None and len(n.input) > 1 and n.input[1] in consts:
            axes = [int(v) for v in numpy_helper.to_array(consts[n.input[1]]).ravel()]
        rank = ranks.get(n.input[0])
        if axes is None or rank is None:
            return True
        return rank == 4 and bool({a % 4 for a in axes} & {2, 3})

    return {
        n.name: (f"global pool ({n.op_type}): its sum runs over H*W values and grows with the tile; "
                 f"FP16 accumulation is not guaranteed")
        for n in model.graph.node if n.op_type in _POOL_OPS and spatial(n)
    }


def activation_ranges(model, inputs: Iterable[np.ndarray]) -> dict[str, float]:
    """Max |value| of every float32 node output over ``inputs`` (graph-input arrays), by ONNX Runtime.

    The graph is augmented with ``Abs -> ReduceMax`` per tensor (scalars only; memory stays
    small). Returns tensor name -> max abs (``inf`` if a value was not finite).
    """
    onnx = _onnx()
    ort = _ort()
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    _ensure_names(m)
    types = _float_types(m)
    outs = {o for n in m.graph.node for o in n.output if o and types.get(o) == _FLOAT
            and n.op_type != "Constant"}
    outs -= {o.name for o in m.graph.output}
    graph_out = [o.name for o in m.graph.output if types.get(o.name) == _FLOAT]
    names = sorted(outs) + graph_out
    for i, t in enumerate(names):
        a = f"__rng_abs_{i}"
        r = f"__rng_max_{i}"
        m.graph.node.append(helper.make_node("Abs", [t], [a], name=a))
        m.graph.node.append(helper.make_node("ReduceMax", [a], [r], name=r, keepdims=0))
        m.graph.output.append(helper.make_tensor_value_info(r, _FLOAT, []))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    want = [f"__rng_max_{i}" for i in range(len(names))]
    best = dict.fromkeys(names, 0.0)
    for x in inputs:
        vals = sess.run(want, {in_name: x})
        for t, v in zip(names, vals):
            v = float(v)
            best[t] = max(best[t], v) if math.isfinite(v) else float("inf")
    return best


@dataclass(frozen=True, kw_only=True)
class Fp16Options:
    """Choices of the FP16 pass.

    - ``pools_fp32``: keep global pools FP32 (rule 2 of the module docstring).
    - ``range_limit``: nodes whose calibrated max |output| exceeds this stay FP32 (rule 3).
    - ``growth_ratio``/``reference_tile``: a node whose max |output| grows at least this much when
      the tile area grows x4, and whose range extrapolated to a ``reference_tile`` tile exceeds
      ``range_limit``, stays FP32 (rule 1, measured: :func:`decide_fp32_nodes`).
    - ``calib_size``: side (pixels) of the calibration crops; ``calib_count``: how many.
    - ``retries``: when the gate fails, decide again with ``range_limit`` divided by
      :data:`FP16_RETRY_FACTOR` (more nodes FP32), up to this many times (:func:`make_fp16`).
    """

    pools_fp32: bool = True
    range_limit: float = 8192.0
    growth_ratio: float = 2.0
    reference_tile: int = 512
    calib_size: int = 32
    calib_count: int = 8
    seed: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Fp32Decision:
    """Which nodes stay FP32 and why; ``max_abs``: calibrated max |output| per float tensor."""

    reasons: dict[str, str]
    max_abs: dict[str, float] = field(default_factory=dict)
    calibration: str = ""
    fp16_peak: tuple[str, float] | None = None  # (tensor, max |value|) among tensors left FP16

    @property
    def fp32_nodes(self) -> tuple[str, ...]:
        return tuple(sorted(self.reasons))

    def notes(self) -> str:
        by_rule: dict[str, list[str]] = defaultdict(list)
        for name, why in sorted(self.reasons.items()):
            by_rule[why.split(" (")[0]].append(name)
        parts = [f"{rule}: {len(ns)} node(s)" for rule, ns in by_rule.items()]
        peak = ""
        if self.fp16_peak is not None:
            peak = (f"; largest calibrated |activation| left in FP16: {self.fp16_peak[1]:.4g} "
                    f"({self.fp16_peak[0]})")
        return ("FP16 everywhere except: " + "; ".join(parts) + peak
                + (f"; calibration: {self.calibration}" if self.calibration else ""))


def doubled_input(x: np.ndarray) -> np.ndarray:
    """A graph input (float32 NCHW or uint8 NHWC) mirror-tiled to twice its height and width.

    Local content (what a convolution sees) is unchanged, while a sum over the whole map (an
    attention energy over C*H*W values, an un-normalised pool) grows four-fold: comparing ranges
    on ``x`` and on this input tells the two apart by measurement.
    """
    axes = (1, 2) if x.dtype == np.uint8 else (2, 3)
    for a in axes:
        x = np.concatenate([x, np.flip(x, axis=a)], axis=a)
    return np.ascontiguousarray(x)


def _static_hw(model) -> bool:
    """Whether the graph's input has fixed height and width (a fixed-tile export)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    hw = (dims[1], dims[2]) if model.graph.input[0].type.tensor_type.elem_type == 2 else (dims[2], dims[3])
    return all(d.HasField("dim_value") for d in hw)


def _area(x: np.ndarray) -> int:
    return int(x.shape[1] * x.shape[2]) if x.dtype == np.uint8 else int(x.shape[2] * x.shape[3])


def _attention_islands(model) -> dict[str, str]:
    """Node -> label for the attention islands (``Softmax`` back to its energy ``MatMul``): names only.

    Used to *name* what the measurement selected (the notes say "layer-attention energy" for HAN's
    layer attention); selection itself never depends on it.
    """
    return {name: "attention" for name in layer_attention_nodes(model)}


def decide_fp32_nodes(model, calib_inputs: Sequence[np.ndarray] = (), *,
                      options: Fp16Options = Fp16Options(), calibration: str = "") -> Fp32Decision:
    """Decide the FP32 node set of ``model`` (an FP32 ``onnx.ModelProto``) **by measurement**.

    For any architecture. ``calib_inputs`` are graph-input arrays (see :func:`to_graph_input`;
    :func:`make_fp16` passes photo crops plus :func:`extreme_inputs`). Each float tensor's max |value|
    is measured under ONNX Runtime on every input and on the input mirror-tiled to twice its sides
    (:func:`doubled_input`). A node stays FP32 when:

    - *calibrated range*: its output exceeds ``options.range_limit`` (8x headroom under 65504);
    - *tile-growing range*: its output grows with the tile area (x ``options.growth_ratio`` or more
      when the area grows x4: a sum over the whole map, like HAN's layer-attention energy over
      C*H*W values) and, extrapolated in proportion to the area, exceeds the limit at a
      ``options.reference_tile`` tile (larger tiles grow further: such a node is never safe in FP16);
    - it *reads* a tensor that one of those rules put beyond the limit (a Softmax after such an
      energy: casting its input to FP16 would give inf);
    - it is a layout op (Transpose, Reshape...) whose outputs feed only FP32 nodes (saves a cast);
    - *global pool* (``options.pools_fp32``, an op-type rule): GlobalAveragePool/ReduceMean/ReduceSum
      sum over H*W values, and FP16 accumulation is not guaranteed (TensorRT does not document it).

    Nodes of an attention island (Softmax back to its energy MatMul) selected by these rules are
    *named* "layer-attention energy" (the island's energy grows with the map: attention over whole
    feature maps, HAN's layer attention) or "attention energy" in the notes. With no
    ``calib_inputs`` only the pool rule applies (and the notes say so).
    """
    _ensure_names(model)
    reasons: dict[str, str] = {}
    if options.pools_fp32:
        reasons.update(pool_nodes(model))
    max_abs: dict[str, float] = {}
    prod = _producers(model)
    if calib_inputs:
        small = activation_ranges(model, calib_inputs)
        if _static_hw(model):  # a fixed-tile graph: the tile cannot grow, ranges are what they are
            big_inputs, big = [np.asarray(x) for x in calib_inputs], small
        else:
            big_inputs = [doubled_input(np.asarray(x)) for x in calib_inputs]
            big = activation_ranges(model, big_inputs)
        area = max(_area(x) for x in big_inputs)
        ref_area = float(options.reference_tile) ** 2
        max_abs = {t: max(small[t], big[t]) for t in small}
        why: dict[str, str] = {}  # node -> measured reason (without the label)
        beyond: set[str] = set()  # tensors measured or extrapolated beyond the limit
        grows: set[str] = set()  # nodes with an output that grows with the tile area
        for t, v in max_abs.items():
            n = prod.get(t)
            if n is None:
                continue
            growth = big[t] / small[t] if small[t] > 0 else (math.inf if big[t] > 0 else 1.0)
            projected = big[t] * ref_area / area
            if growth >= options.growth_ratio and v > 0:
                grows.add(n.name)
            if not v <= options.range_limit:
                beyond.add(t)
                why.setdefault(n.name, f"calibrated range ({n.op_type}): max |output| {v:.4g} > limit "
                                       f"{options.range_limit:g}")
            elif growth >= options.growth_ratio and projected > options.range_limit:
                beyond.add(t)
                why.setdefault(n.name, f"tile-growing range ({n.op_type}): max |output| grows x{growth:.3g} "
                                       f"when the tile area grows x4 ({v:.4g} measured), ~{projected:.3g} "
                                       f"at a {options.reference_tile}-px tile > limit {options.range_limit:g}")
        for n in model.graph.node:
            if n.name not in why and n.op_type not in _ANY_INPUT and any(t in beyond for t in n.input):
                t = next(t for t in n.input if t in beyond)
                why[n.name] = (f"reads a tensor beyond the FP16 range ({n.op_type}): its input {t} "
                               f"exceeds the limit {options.range_limit:g} (measured or extrapolated)")
        # layout ops whose float outputs feed only FP32 nodes stay FP32 too (no cast pair around them)
        cons = _consumers(model)
        types = _float_types(model)
        changed = True
        while changed:
            changed = False
            for n in model.graph.node:
                if n.name in why or n.op_type not in _LAYOUT_OPS:
                    continue
                outs = [o for o in n.output if o and types.get(o) == _FLOAT]
                users = [u for o in outs for u in cons.get(o, [])]
                if outs and users and all(u.name in why or u.name in reasons for u in users):
                    why[n.name] = f"layout op ({n.op_type}) feeding only FP32 nodes"
                    changed = True
        islands = _attention_islands(model)
        energy_grows = any(k in grows for k in why if k in islands)
        label = "layer-attention energy" if energy_grows else "attention energy"
        for name, w in why.items():
            if name in islands:
                reasons[name] = f"{label} ({w.split(' (', 1)[1]}"
            else:
                reasons.setdefault(name, w)
    else:
        calibration = calibration or "none (measured rules skipped)"
    left = {t: v for t, v in max_abs.items() if t in prod and prod[t].name not in reasons}
    peak = None
    if left:
        top = max(left, key=left.__getitem__)
        peak = (top, left[top])
    return Fp32Decision(reasons, max_abs, calibration, peak)


def convert_fp16(model, fp32_nodes: Iterable[str]):
    """Return a copy of ``model`` with every float32 tensor in FP16 except ``fp32_nodes``.

    Float initializers used by FP16 nodes are stored FP16 (a copy is kept if FP32 nodes use them
    too); ``Cast`` nodes are inserted where an FP16 tensor meets an FP32 node and vice versa; the
    graph's inputs and outputs keep their types. The result passes ``onnx.checker``.
    """
    onnx = _onnx()
    from onnx import helper, numpy_helper

    src = onnx.ModelProto()
    src.CopyFrom(model)
    _ensure_names(src)
    keep = set(fp32_nodes)
    unknown = keep - {n.name for n in src.graph.node}
    if unknown:
        raise UsageError(f"convert_fp16: no node named {sorted(unknown)[:3]} in the graph.")
    types = _float_types(src)
    g = src.graph
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}

    # Graph outputs produced by FP16 nodes: the node writes NAME__fp16, a final Cast writes NAME.
    tail: list[Any] = []
    rename: dict[str, str] = {}
    for n in g.node:
        for j, o in enumerate(n.output):
            if o in graph_outputs and types.get(o) == _FLOAT and n.name not in keep and n.op_type != "Cast":
                new = f"{o}__fp16"
                n.output[j] = new
                rename[o] = new
                tail.append(helper.make_node("Cast", [new], [o], name=f"{o}__cast_out", to=_FLOAT))
    for n in g.node:
        for j, t in enumerate(n.input):
            if t in rename:
                n.input[j] = rename[t]
    for o, new in rename.items():
        types[new] = _FLOAT

    produced: dict[str, int] = {}  # float tensor -> dtype it has in the new graph
    for vi in g.input:
        produced[vi.name] = types.get(vi.name, 0)
    for name, init in inits.items():
        produced[name] = init.data_type
    new_inits: dict[str, Any] = {}
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[Any] = []

    def converted(t: str, want: int) -> str:
        key = (t, want)
        if key in casts:
            return casts[key]
        if t in inits:
            arr = numpy_helper.to_array(inits[t])
            name = f"{t}__fp16" if want == _FLOAT16 else f"{t}__fp32"
            new_inits[name] = numpy_helper.from_array(
                arr.astype(np.float16 if want == _FLOAT16 else np.float32), name)
        else:
            name = f"{t}__to_{'fp16' if want == _FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [t], [name], name=f"{name}__cast", to=want))
        casts[key] = name
        return name

    for n in g.node:
        dom = _FLOAT if n.name in keep else _FLOAT16
        if n.op_type == "Constant" and dom == _FLOAT16:
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == _FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        if n.op_type == "Cast" and dom == _FLOAT16 and not set(n.output) & graph_outputs:
            for a in n.attribute:
                if a.name == "to" and a.i == _FLOAT:
                    a.i = _FLOAT16
        if n.op_type not in _ANY_INPUT:
            fixed = _KEEP_FP32_INPUTS.get(n.op_type, set())
            for j, t in enumerate(n.input):
                if not t or types.get(t) != _FLOAT:
                    continue
                want = _FLOAT if j in fixed else dom
                if produced.get(t, _FLOAT) != want:
                    n.input[j] = converted(t, want)
        for o in n.output:
            if not o:
                continue
            if n.op_type == "Cast":
                produced[o] = next(a.i for a in n.attribute if a.name == "to")
            elif n.op_type == "Constant":
                produced[o] = next((a.t.data_type for a in n.attribute if a.name == "value"), 0)
            elif types.get(o) == _FLOAT:
                produced[o] = dom
        new_nodes.append(n)
    new_nodes.extend(tail)

    del g.node[:]
    g.node.extend(new_nodes)
    used = {t for n in g.node for t in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    g.initializer.extend(v for k, v in new_inits.items() if k in used)
    del g.value_info[:]
    onnx.checker.check_model(src)
    src = onnx.shape_inference.infer_shapes(src, strict_mode=True)
    return src


# --- honest FP16 arithmetic -------------------------------------------------------------------

def reference_run(model_or_path, x: np.ndarray) -> np.ndarray:
    """Run a graph with ``onnx.reference.ReferenceEvaluator`` (real FP16 arithmetic in FP16 nodes).

    Slow (pure numpy): use tiny models or small inputs. Returns the first output.
    """
    _onnx()
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(str(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path)
    name = ref.input_names[0]
    with np.errstate(all="ignore"):
        return ref.run(None, {name: x})[0]


def _ort_run(path_or_model, x: np.ndarray) -> np.ndarray:
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    data = str(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model.SerializeToString()
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _fit(img: np.ndarray, side: int) -> np.ndarray:
    """An HxWx3 crop mirror-padded (or cut) to ``side`` x ``side`` (the input of a fixed-tile graph)."""
    a = _rgb(img)[:side, :side]
    ph, pw = side - a.shape[0], side - a.shape[1]
    return np.ascontiguousarray(np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="symmetric")) if ph or pw else a


def _legal(n: int, info: ModelInfo) -> int:
    """``n`` rounded up to a side the graph accepts (its ``min_tile`` and ``tile_multiple``)."""
    from hanrt.tiling import legal_tile

    return legal_tile(n, info.min_tile, info.tile_multiple)


#: When the FP16 gate fails with the decided FP32 nodes, :func:`make_fp16` may retry
#: (``Fp16Options.retries``) with the range limit divided by this (more nodes kept FP32). Measured:
#: the 2x16x32 document model failed at the default 8192 and at 2048 (50.0 dB on the checkerboard
#: input, the gate is 50 dB) and passed at 512 (61.8 dB).
FP16_RETRY_FACTOR = 4


def make_fp16(tmp_path: str | os.PathLike, info: ModelInfo, *, calib: Sequence[np.ndarray] = (),
              calibration: str = "", options: Fp16Options = Fp16Options(),
              check_size: int = 8, min_psnr: float = 50.0,
              fp32_nodes: Sequence[str] | None = None) -> ModelInfo:
    """Rewrite the FP32 graph at ``tmp_path`` in place as FP16 mixed; return the updated info.

    A precision hook for :func:`hanrt_export.to_onnx.export_onnx`. ``calib`` are HxWx3 uint8
    crops (real photos); the extreme inputs are added to them. Gate: the FP16 graph under
    :func:`reference_run` (real FP16) on the extreme inputs at ``check_size`` pixels must be
    finite and within ``min_psnr`` dB of the FP32 graph. If it is not, the decision is taken again
    with ``options.range_limit`` divided by :data:`FP16_RETRY_FACTOR` (more nodes FP32), up to
    ``options.retries`` times (the notes say which limit passed); then :class:`ParityError`.
    ``fp32_nodes`` replaces the decision by an explicit node list (recorded as such; no retry).
    """
    onnx = _onnx()
    from .to_onnx import _set_metadata

    path = Path(tmp_path)
    m32 = onnx.load(str(path))
    side = info.fixed_tile or _legal(max(8, options.calib_size), info)
    inputs = [to_graph_input(_fit(c, side) if info.fixed_tile else c, info.io) for c in calib
              if info.fixed_tile or (min(c.shape[:2]) >= info.min_tile and c.shape[0] % info.tile_multiple == 0
                                     and c.shape[1] % info.tile_multiple == 0)]
    inputs += [to_graph_input(v, info.io) for v in extreme_inputs(side).values()]
    check_size = info.fixed_tile or _legal(check_size, info)
    failures: list[str] = []
    limits = [options.range_limit] if fp32_nodes is not None else \
        [options.range_limit / FP16_RETRY_FACTOR ** k for k in range(max(0, options.retries) + 1)]
    for limit in limits:
        if fp32_nodes is not None:
            decision = Fp32Decision({n: "explicit (given by the caller)" for n in fp32_nodes},
                                    calibration="explicit node list")
        else:
            decision = decide_fp32_nodes(m32, inputs, options=replace(options, range_limit=limit),
                                         calibration=calibration or f"{len(calib)} photo crops + 3 extreme inputs")
        m16 = convert_fp16(m32, decision.fp32_nodes)
        out = info.with_(precision="fp16", fp32_nodes=decision.fp32_nodes, precision_notes=decision.notes())
        worst, failed, checker = _fp16_gate(m32, m16, out, check_size, min_psnr)
        if failed is None:
            retry = (f"; the gate failed at range limit {'; '.join(failures)}; passed at {limit:g}"
                     if failures else "")
            out = out.with_(precision_notes=f"{out.precision_notes}; check: worst {worst:.1f} dB vs FP32 on "
                                            f"extreme inputs at {check_size}x{check_size} ({checker}){retry}")
            _set_metadata(m16, out)
            onnx.save(m16, str(path))
            return out
        failures.append(f"{limit:g}: {failed}")
        if fp32_nodes is None and len(failures) < len(limits):
            log.info("fp16 gate failed at range limit %g (%s); retrying with more nodes in FP32", limit, failed)
    if fp32_nodes is not None:
        raise ParityError(f"FP16 gate failed with the FP32 nodes given: {failed}, below {min_psnr:g} dB from "
                          f"FP32; nothing was written.")
    raise ParityError(
        f"FP16 gate failed: the FP16 graph is below {min_psnr:g} dB from FP32 at every range limit tried "
        f"({'; '.join(failures)}); nothing was written. Use the FP32 graph for this model.")


def _fp16_gate(m32, m16, info: ModelInfo, check_size: int, min_psnr: float) -> tuple[float, str | None, str]:
    """Run ``m16`` against ``m32`` on the extreme inputs: (worst dB, the first failure or None, the checker)."""
    worst = float("inf")
    checker = "ReferenceEvaluator, real FP16 arithmetic"
    for name, img in extreme_inputs(check_size).items():
        x = to_graph_input(img, info.io)
        ref = _ort_run(m32, x).astype(np.float64)
        try:
            got = reference_run(m16, x)
        except (ValueError, NotImplementedError, TypeError, IndexError) as exc:
            # onnx's reference ops lack a few forms (Pad with negative pads: RealCUGAN's crops). The
            # check then runs on ONNX Runtime, which computes FP16 nodes in FP32 on the CPU: it checks
            # the conversion, while overflow is ruled out only by the measured ranges above.
            checker = (f"ONNX Runtime (FP32 arithmetic on the CPU; ReferenceEvaluator cannot run this graph: "
                       f"{type(exc).__name__}: {str(exc)[:80]})")
            log.warning("fp16 check: %s", checker)
            got = _ort_run(m16, x)
        p = psnr(got.astype(np.float64), ref)
        log.info("fp16 check (%s) %s %dx%d: %.1f dB", checker, name, check_size, check_size, p)
        worst = min(worst, p)
        if not p >= min_psnr:
            return worst, f"on the {name!r} input {p:.2f} dB ({checker})", checker
    return worst, None, checker


# --- INT8 -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Int8Options:
    """Choices of the INT8 pass.

    - ``calib_size`` x ``calib_size`` crops, ``calib_count`` of them (input pixels).
    - ``method``: ONNX Runtime calibration method: ``minmax``, ``percentile``, ``entropy``.
    - ``percentile``: for ``method='percentile'``.
    - ``keep_edges``: keep the first (head) and last (tail) convolutions FP32.
    - ``activations``: ``"int8"`` — symmetric INT8 activations (zero point 0), the only Q/DQ form
      TensorRT accepts; ``"uint8"`` — asymmetric UINT8 activations, ONNX Runtime CPU's U8S8 fast
      path (TensorRT cannot build it; ``hanrt export`` records that in the metadata).
    """

    calib_size: int = 48
    activations: str = "int8"
    calib_count: int = 16
    method: str = "percentile"
    percentile: float = 99.999
    keep_edges: bool = True
    seed: int = 0


def int8_excluded_nodes(model, *, keep_edges: bool = True) -> dict[str, str]:
    """Nodes left unquantized by :func:`quantize_int8`, with reasons.

    Only ``Conv`` nodes are ever quantized; this lists the layer-attention energy nodes (for the
    record and in case more op types are quantized later), the 1x1 convolutions and, with
    ``keep_edges``, the first and last 3x3 convolutions; also the channel-spatial attention's 3-D
    convolution.
    """
    _ensure_names(model)
    out: dict[str, str] = {k: "layer attention" for k in layer_attention_nodes(model)}
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for n in convs:
        w = inits.get(n.input[1])
        dims = list(w.dims) if w is not None else []
        if len(dims) == 4 and dims[2] == 1 and dims[3] == 1:
            out[n.name] = "1x1 convolution (mean shift or channel attention): no compute to save"
        elif len(dims) == 5:
            out[n.name] = "3-D convolution (channel-spatial attention): one 3x3x3 filter, little compute"
    if keep_edges:
        big = [n for n in convs if n.name not in out]
        if big:
            out[big[0].name] = "first convolution (reads the image)"
            out[big[-1].name] = "last convolution (writes the image)"
    return out


def _drop_preprocess_advice(record: logging.LogRecord) -> bool:
    """Root-logger filter: ONNX Runtime's quantizer advises shape pre-processing on every call
    (HAN's graph is already shape-inferred and simplified by the export)."""
    return "pre-processing before quantization" not in record.getMessage() and \
        "pre-processing before quantization" not in str(record.msg)


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calib: Sequence[np.ndarray], *,
                  io: str = "float", options: Int8Options = Int8Options()) -> dict[str, str]:
    """Write an explicit Q/DQ INT8 version of the FP32 graph ``src`` to ``dst``.

    ``calib`` are HxWx3 uint8 crops. Returns the excluded nodes with reasons.
    """
    onnx = _onnx()
    _ort()
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    if not calib:
        raise UsageError("INT8 needs calibration photos: pass --calib DIR.")
    if options.activations not in ("int8", "uint8"):
        raise UsageError(f"INT8 activations must be int8 or uint8, got {options.activations!r}.")
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}.get(options.method)
    if method is None:
        raise UsageError(f"unknown INT8 calibration method {options.method!r} (minmax, percentile, entropy).")
    m = onnx.load(str(src))
    _ensure_names(m)
    excluded = int8_excluded_nodes(m, keep_edges=options.keep_edges)
    in_name = m.graph.input[0].name
    data = [to_graph_input(c, io) for c in calib]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(data)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {in_name: x}

    s8 = options.activations == "int8"
    # QuantizeBias=False: biases stay float. quantize_static's default quantizes them to INT32
    # behind a DequantizeLinear, which TensorRT cannot parse (it dequantizes INT8/FP8/INT4 only:
    # onnxruntime #14229, onnx-tensorrt #850); TensorRT fuses a float bias into the INT8 conv.
    extra: dict[str, Any] = {"ActivationSymmetric": s8, "WeightSymmetric": True, "QuantizeBias": False}
    if options.method == "percentile":
        extra["CalibPercentile"] = options.percentile
    chatter = _io.StringIO()  # quantize_static prints its progress; keep it in the log instead
    named = Path(dst).with_suffix(".named.tmp.onnx")
    root = logging.getLogger()
    root.addFilter(_drop_preprocess_advice)
    try:
        onnx.save(m, str(named))
        with contextlib.redirect_stdout(chatter):
            quantize_static(
                str(named), str(dst), _Reader(), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"], per_channel=True,
                activation_type=QuantType.QInt8 if s8 else QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=sorted(excluded), calibrate_method=method,
                extra_options=extra,
            )
    finally:
        root.removeFilter(_drop_preprocess_advice)
        named.unlink(missing_ok=True)
        if chatter.getvalue().strip():
            log.debug("quantize_static: %s", chatter.getvalue().strip())
    return excluded


def make_int8(tmp_path: str | os.PathLike, info: ModelInfo, *, calib: Sequence[np.ndarray],
              calibration: str = "", options: Int8Options = Int8Options(),
              min_psnr: float = 25.0) -> ModelInfo:
    """Rewrite the FP32 graph at ``tmp_path`` in place as INT8 Q/DQ; return the updated info.

    Gate: on the first calibration crop the INT8 graph (ONNX Runtime CPU) must be within
    ``min_psnr`` dB of the FP32 graph.
    """
    onnx = _onnx()
    from .to_onnx import _set_metadata

    path = Path(tmp_path)
    out = path.with_name(path.name + ".int8")
    try:
        excluded = quantize_int8(path, out, calib, io=info.io, options=options)
        x = to_graph_input(calib[0], info.io)
        p = psnr(_ort_run(out, x).astype(np.float64), _ort_run(path, x).astype(np.float64))
        log.info("int8 check (ONNX Runtime CPU) on a calibration crop: %.1f dB", p)
        if not p >= min_psnr:
            raise ParityError(f"INT8 gate failed: {p:.1f} dB from FP32 on a calibration crop, below "
                              f"{min_psnr:g} dB; nothing was written.")
        m = onnx.load(str(out))
        nq = sum(1 for n in m.graph.node if n.op_type == "QuantizeLinear")
        act = ("symmetric INT8 activations" if options.activations == "int8"
               else "asymmetric UINT8 activations (ONNX Runtime CPU; not TensorRT-buildable)")
        notes = (f"INT8 Q/DQ (ONNX Runtime quantize_static, QDQ, per-channel INT8 weights, float biases, {act}, "
                 f"{options.method} calibration on {calibration or f'{len(calib)} photo crops'}) "
                 f"of the 3x3 convolutions; {len(excluded)} node(s) left FP32: layer attention, 1x1 and "
                 f"3-D convolutions{', first and last convolution' if options.keep_edges else ''}; "
                 f"{nq} QuantizeLinear nodes; check {p:.1f} dB vs FP32")
        info = info.with_(precision="int8", fp32_nodes=tuple(sorted(excluded)), precision_notes=notes)
        _set_metadata(m, info)
        onnx.save(m, str(path))
    finally:
        out.unlink(missing_ok=True)
    return info
