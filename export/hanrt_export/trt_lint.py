"""TensorRT-buildability lint for ONNX graphs (no TensorRT needed: ``onnx`` only, no torch).

Checks a graph against what TensorRT 10.3's ONNX parser accepts (the table in
:mod:`hanrt_export.trt_ops`, with its source) and reports every problem with the node, operator,
tensor, the rule and what to do. Rules:

``opset``
    The default-domain opset lies in TensorRT's range (9..20).
``unsupported-op``
    Every operator is in the support table (default ONNX domain; no custom domains).
``unsupported-type``
    The operator supports the data type of its main tensor (first input; for ``Cast`` also the
    output; for source nodes such as ``Constant`` the output). Types come from ONNX shape/type
    inference. UINT8 is left to the next rule, Q/DQ to the last three.
``uint8-io``
    UINT8 appears only as a graph input that goes straight into ``Cast`` nodes, or a graph output
    written by a ``Cast`` (TensorRT issue #3985; ``Cast`` is the only operator listing UINT8).
``dq-type``
    ``DequantizeLinear`` reads INT8/FP8/INT4 data only: no INT32 (quantized biases: onnxruntime
    #14229, onnx-tensorrt #850) and no UINT8 (asymmetric activations).
``q-type``
    ``QuantizeLinear`` writes INT8/FP8/INT4 (its zero point's type), never UINT8.
``qdq-zero-point``
    Q/DQ zero points are constant and all zero (TensorRT quantizes symmetrically).

``lint(model) -> list[Finding]``; an empty list means no rule fired. The lint is a static check of
documented limits, not a build: a clean graph can still fail on a GPU for reasons no table
states (shapes, memory, a parser bug); ``benchmarks/gpu_check.sh`` builds the bundled graphs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hanrt.errors import InputError, MissingDependencyError

from . import trt_ops as T

__all__ = ["Finding", "lint", "format_findings", "summary", "tensor_types", "RULES"]

RULES = ("opset", "unsupported-op", "unsupported-type", "uint8-io", "dq-type", "q-type", "qdq-zero-point")

_UINT8 = 2
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
# Ops that produce data from nothing (checked on their output type).
_SOURCES = {"Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "EyeLike"}


@dataclass(frozen=True)
class Finding:
    """One broken rule: ``node`` (name) running ``op`` on ``tensor``; ``message`` says what is
    wrong, ``fix`` what to do."""

    rule: str
    node: str
    op: str
    tensor: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"node {self.node!r} ({self.op})" if self.node else "graph"
        on = f", tensor {self.tensor!r}" if self.tensor else ""
        return f"[{self.rule}] {where}{on}: {self.message}; {self.fix}"


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("the TensorRT lint needs onnx: pip install 'hanrt[export]'.") from exc
    return onnx


def _load(model_or_path: Any):
    onnx = _onnx()
    if isinstance(model_or_path, (str, os.PathLike)):
        p = str(model_or_path)
        if not os.path.isfile(p):
            raise InputError(f"{p!r} does not exist or is not a file.")
        try:
            return onnx.load(p)
        except Exception as exc:  # onnx raises DecodeError and friends
            raise InputError(f"{p!r} is not an ONNX model ({exc}).") from None
    return model_or_path


def tensor_types(model, *, fallback: bool = False) -> dict[str, int]:
    """Tensor name -> ONNX elem_type for every typed tensor of the graph: shape/type inference,
    then initializers and ``Constant`` outputs. ``fallback``: if inference refuses the graph, use
    the types the file declares instead of raising."""
    onnx = _onnx()
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # inference refuses some graphs
        if not fallback:
            raise
        g = model.graph
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    types.update({name: t.data_type for name, t in _constants(model).items()})
    return types


def _constants(model) -> dict[str, Any]:
    """Tensor name -> TensorProto for initializers and Constant outputs."""
    out: dict[str, Any] = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t
    return out


def _tname(t: int | None) -> str:
    return T.TYPE_NAMES.get(t, f"type {t}") if t else "unknown"


def lint(model_or_path: Any) -> list[Finding]:
    """Lint an ONNX model (``ModelProto`` or path) for TensorRT 10.3; return the findings."""
    _onnx()
    from onnx import numpy_helper

    model = _load(model_or_path)
    if model is model_or_path:  # unnamed nodes get names below: work on a copy of the caller's model
        model = type(model)()
        model.CopyFrom(model_or_path)
    g = model.graph
    types = {k: v for k, v in tensor_types(model, fallback=True).items() if v}
    consts = _constants(model)
    graph_in = {i.name for i in g.input} - {i.name for i in g.initializer}
    graph_out = {o.name for o in g.output}
    found: list[Finding] = []

    def add(rule: str, node, tensor: str, message: str, fix: str) -> None:
        f = Finding(rule, node.name if node is not None else "", node.op_type if node is not None else "",
                    tensor, message, fix)
        if f not in found:
            found.append(f)

    lo, hi = T.OPSET_RANGE
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            add("opset", None, "", f"default-domain opset {imp.version} is outside TensorRT {T.TRT_VERSION}'s "
                f"range {lo}..{hi}", f"export with --opset between {lo} and {hi}")

    for i, n in enumerate(g.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    _uint8_rule(g, types, graph_in, graph_out, add)
    for n in g.node:
        op = n.op_type
        if n.domain not in ("", "ai.onnx"):
            add("unsupported-op", n, "", f"operator {n.domain}::{op} is not in TensorRT's ONNX operator table",
                "re-export with standard ONNX operators (custom domains need a TensorRT plugin)")
            continue
        if op not in T.SUPPORTED:
            why = "is listed as unsupported" if op in T.UNSUPPORTED else "is not in"
            add("unsupported-op", n, "", f"{op} {why} TensorRT {T.TRT_VERSION}'s ONNX operator table",
                "replace it with supported operators before building")
            continue

        if op == "DequantizeLinear":
            t = n.input[0]
            tt = types.get(t)
            if _tname(tt) not in T.QUANTIZED_TYPES:
                fix = ("keep biases in float (onnxruntime quantize_static extra_options QuantizeBias=False)"
                       if tt == 6 else
                       "use symmetric INT8 activations (hanrt export --int8-activations int8)" if tt == _UINT8
                       else "dequantize INT8/FP8/INT4 data only")
                add("dq-type", n, t, f"DequantizeLinear on {_tname(tt)} data; TensorRT {T.TRT_VERSION} "
                    "dequantizes INT8, FP8 and INT4 only", fix)
        elif op == "QuantizeLinear":
            t = n.output[0]
            tt = types.get(t)
            if _tname(tt) not in T.QUANTIZED_TYPES:
                add("q-type", n, t, f"QuantizeLinear writes {_tname(tt)}; TensorRT {T.TRT_VERSION} quantizes "
                    "to INT8, FP8 and INT4 only", "quantize activations to INT8 (symmetric, zero point 0)")
        if op in _QDQ and len(n.input) > 2 and n.input[2]:
            zp = n.input[2]
            if zp not in consts:
                add("qdq-zero-point", n, zp, "the zero point is not a constant",
                    "make the zero point an initializer equal to 0")
            else:
                arr = numpy_helper.to_array(consts[zp])
                if arr.size and bool((arr.astype("int64") != 0).any()):
                    add("qdq-zero-point", n, zp, f"zero point is not all zero ({int((arr != 0).sum())} of "
                        f"{arr.size} nonzero); TensorRT quantizes symmetrically",
                        "use symmetric quantization (ActivationSymmetric/WeightSymmetric, zero point 0)")

        # data types against the table (UINT8 and Q/DQ handled above)
        if op in _QDQ:
            continue
        allowed = T.SUPPORTED[op]
        checks: list[str] = []
        if n.input and n.input[0] and op not in _SOURCES:
            checks.append(n.input[0])
        if op in _SOURCES or op in ("Cast", "CastLike") or not n.input:
            checks += [o for o in n.output[:1] if o]
        for t in checks:
            tt = types.get(t)
            if tt is None or tt == _UINT8:
                continue
            name = _tname(tt)
            if name not in allowed:
                fix = ("INT8/INT4/FP8 data is only supported between QuantizeLinear and DequantizeLinear"
                       if name in T.QUANTIZED_TYPES else
                       f"cast to one of {', '.join(sorted(allowed))} first")
                add("unsupported-type", n, t, f"{op} on {name}; TensorRT {T.TRT_VERSION} supports {op} on "
                    f"{', '.join(sorted(allowed))}", fix)
    return found


def _uint8_rule(g, types: dict[str, int], graph_in: set[str], graph_out: set[str], add) -> None:
    """UINT8 only as a graph input read by Casts or a graph output written by a Cast: one finding
    per offending tensor, on the node that is not a Cast (Q/DQ are left to their own rules)."""
    producer = {o: n for n in g.node for o in n.output if o}
    consumers: dict[str, list] = {}
    for n in g.node:
        for t in n.input:
            if t:
                consumers.setdefault(t, []).append(n)
    fix_in = "Cast the UINT8 input to float first, then transpose/compute"
    fix_out = "transpose/compute in float and make the Cast to UINT8 the last node"
    for t in sorted(t for t, ty in types.items() if ty == _UINT8):
        p = producer.get(t)
        if t in graph_in:
            for c in consumers.get(t, []):
                if c.op_type not in ("Cast", *_QDQ):
                    add("uint8-io", c, t, f"{c.op_type} reads the UINT8 graph input {t!r}; TensorRT takes UINT8 "
                        "only as a network input that goes straight into a Cast", fix_in)
        elif p is None or p.op_type in _QDQ:
            continue  # an initializer (read by DQ: dq-type) or a Q output (q-type)
        elif t in graph_out:
            if p.op_type != "Cast":
                add("uint8-io", p, t, f"{p.op_type} writes the UINT8 graph output {t!r}; TensorRT writes UINT8 "
                    "only as a network output straight from a Cast", fix_out)
        else:
            add("uint8-io", p, t, f"{p.op_type} writes the UINT8 tensor {t!r} inside the graph; TensorRT has "
                "UINT8 only as network inputs/outputs next to a Cast",
                fix_out if p.op_type == "Cast" else fix_in)


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    """Findings counted by rule (only rules that fired)."""
    out: dict[str, int] = {}
    for f in findings:
        out[f.rule] = out.get(f.rule, 0) + 1
    return out


def format_findings(findings: list[Finding], *, limit: int | None = 20) -> str:
    """Human-readable report: a count per rule, then one line per finding (first ``limit``)."""
    if not findings:
        return f"no findings: TensorRT {T.TRT_VERSION}'s ONNX operator table accepts every node"
    counts = ", ".join(f"{k}: {v}" for k, v in summary(findings).items())
    lines = [f"{len(findings)} finding(s) against TensorRT {T.TRT_VERSION}'s ONNX operator table ({counts})"]
    shown = findings if limit is None else findings[:limit]
    lines += [f"  {f}" for f in shown]
    if len(shown) < len(findings):
        lines.append(f"  ... and {len(findings) - len(shown)} more (hanrt lint MODEL lists them all)")
    return "\n".join(lines)
