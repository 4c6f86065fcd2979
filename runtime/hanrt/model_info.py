"""What a model or engine is: scale, I/O kind and layout, value range, tile rules, precision recipe,
hyperparameters and provenance.

The description travels **with the artifact**: in an ONNX file it is the JSON string under the
``metadata_props`` key ``hanrt.model_info`` (plus a few flat keys for people reading the file in
Netron); in a TensorRT engine it is the JSON sidecar. The runtime reads capabilities from there
instead of being told (``if scale == 4`` never appears in the tiler).

Reading ONNX metadata needs neither ``onnx`` nor ``onnxruntime``: :func:`read_onnx_metadata`
walks the protobuf wire format of the top-level ``ModelProto`` and skips the graph.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .errors import InputError, ModelError

__all__ = [
    "ModelInfo",
    "METADATA_KEY",
    "read_onnx_metadata",
    "read_model_info",
    "IOKind",
    "Precision",
    "DEFAULT_MARGIN",
    "MarginSource",
    "resolve_margin",
    "describe_margin",
]

METADATA_KEY = "hanrt.model_info"
SCHEMA_VERSION = 1

#: The tiling context margin (input pixels) for a model with no measured margin recorded: safe
#: headroom for deeper models than the bundled ones (full-size HAN could not be measured here).
DEFAULT_MARGIN = 8

IOKind = Literal["float", "uint8"]
Precision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class ModelInfo:
    """Description of a super-resolution graph or engine (HAN, or another architecture exported
    through the host-side export package's model registry).

    - ``arch``: the architecture (``"HAN"``; spandrel's id for others: ``"ESRGAN"``, ``"SwinIR"``...).
      Descriptions written before the field existed are HAN's, and read as ``"HAN"``.

    - ``io == "float"``: input/output float32 **NCHW** RGB, values 0..255 (output unclamped).
    - ``io == "uint8"``: input/output uint8 **NHWC** RGB, 0..255; cast, transpose, clamp and
      rounding happen inside the graph.
    - ``scale``: output side = input side x scale. ``n_colors``: channels (3).
    - ``min_tile``: smallest input side the graph accepts; ``tile_multiple``: input sides must
      be multiples of this (1 for HAN: no down-sampling inside). The tiler rounds tiles to them
      (:func:`hanrt.tiling.legal_tile`) and pads smaller images.
    - ``value_range``: the values of the graph's I/O (0..255 for every graph hanrt exports from a
      0..255 network; a HAN trained with ``rgb_range`` 1 says 0..1). ``network_range``: the range
      the network itself computes in (0..1 for spandrel's models, whose graphs scale by 1/255 in
      and 255 out); ``None`` when it equals ``value_range`` (and in older descriptions).
    - ``fixed_tile``: when > 0 the graph runs only ``fixed_tile`` x ``fixed_tile`` inputs (static
      height and width: a model whose traced graph bakes a size-dependent mask, e.g. SwinIR's
      shifted windows); the tiler then plans fixed tiles and pads smaller images. 0: any legal size.
    - ``max_batch``: the most tiles per call the graph computes correctly (1 when its trace baked
      the batch in, measured at export); 0: any.
    - ``precision`` and ``fp32_nodes``: the precision recipe (which nodes stay FP32 and why).
    - ``trt_buildable``: the result of the TensorRT lint (``hanrt lint``, run by ``hanrt export``
      on the graph it wrote): ``True`` no rule fired, ``False`` the graph is knowingly not
      TensorRT-buildable (``trt_lint`` says why), ``None`` not checked (older graphs, engines).
      The lint checks TensorRT 10.3's documented limits; it is not a build.
    - ``margin``: the tiling context margin (input pixels cropped on every interior tile side) this
      model was *measured* to need: the smallest margin whose tiled output stays within the
      criterion of whole-image output (the benchmarks' ``tiling_study --write-margin`` states the rule
      and writes it). ``None``: not measured (older files, freshly exported graphs, engines built
      from them); the runtime then uses its safe default
      (:data:`DEFAULT_MARGIN`, :func:`resolve_margin`). An explicit margin always wins over both.
      ``margin_note``: with ``margin`` None, why a study that ran recorded none (no margin met its
      rule; the figures), so ``hanrt info`` does not call a studied model "not measured"; with a
      ``margin``, how far its tiles stay from whole-image output when no margin studied met the
      criterion (the global attention sets a floor that more margin does not lift).
    """

    scale: int
    arch: str = "HAN"
    io: IOKind = "float"
    n_colors: int = 3
    value_range: tuple[float, float] = (0.0, 255.0)
    precision: Precision = "fp32"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    csam: str = "conv3d"
    input_name: str = "input"
    output_name: str = "output"
    min_tile: int = 1
    tile_multiple: int = 1
    fp32_nodes: tuple[str, ...] = ()
    precision_notes: str = ""
    source_sha256: str = ""
    source: str = ""
    hanrt_version: str = ""
    opset: int = 0
    trt_buildable: bool | None = None
    trt_lint: str = ""
    network_range: tuple[float, float] | None = None
    fixed_tile: int = 0
    max_batch: int = 0
    margin: int | None = None
    margin_note: str = ""
    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> str:
        """``"NCHW"`` for float I/O, ``"NHWC"`` for uint8 I/O."""
        return "NHWC" if self.io == "uint8" else "NCHW"

    @property
    def input_dtype(self) -> str:
        return "uint8" if self.io == "uint8" else "float32"

    def to_json(self) -> str:
        d = asdict(self)
        d["value_range"] = list(self.value_range)
        d["fp32_nodes"] = list(self.fp32_nodes)
        if self.network_range is not None:
            d["network_range"] = list(self.network_range)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "model") -> "ModelInfo":
        try:
            d = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{source}: the hanrt description is not valid JSON ({exc}).") from None
        if not isinstance(d, dict) or "scale" not in d:
            raise ModelError(f"{source}: the hanrt description lacks 'scale'.")
        known = {f for f in cls.__dataclass_fields__}
        extra = {k: v for k, v in d.items() if k not in known}
        d = {k: v for k, v in d.items() if k in known}
        if "value_range" in d:
            d["value_range"] = tuple(d["value_range"])
        if "fp32_nodes" in d:
            d["fp32_nodes"] = tuple(d["fp32_nodes"])
        if d.get("network_range") is not None:
            d["network_range"] = tuple(d["network_range"])
        if extra:
            d["extra"] = {**d.get("extra", {}), **extra}
        try:
            info = cls(**d)
        except TypeError as exc:
            raise ModelError(f"{source}: malformed hanrt description ({exc}).") from None
        info.validate(source=source)
        return info

    def validate(self, *, source: str = "model") -> None:
        if int(self.scale) < 1:
            raise ModelError(f"{source}: scale must be >= 1, found {self.scale}.")
        if self.io not in ("float", "uint8"):
            raise ModelError(f"{source}: io must be 'float' or 'uint8', found {self.io!r}.")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ModelError(f"{source}: unknown precision {self.precision!r}.")
        if int(self.min_tile) < 1 or int(self.tile_multiple) < 1:
            raise ModelError(f"{source}: min_tile and tile_multiple must be >= 1, found {self.min_tile} and "
                             f"{self.tile_multiple}.")
        if self.margin is not None and (isinstance(self.margin, bool) or not isinstance(self.margin, int)
                                        or self.margin < 0):
            raise ModelError(f"{source}: margin must be a whole number of pixels >= 0 or null (not measured), "
                             f"found {self.margin!r}.")

    def metadata_props(self) -> dict[str, str]:
        """Key/value pairs to store in an ONNX file's ``metadata_props``."""
        return {
            METADATA_KEY: self.to_json(),
            "hanrt.arch": self.arch,
            "hanrt.scale": str(self.scale),
            "hanrt.io": self.io,
            "hanrt.layout": self.layout,
            "hanrt.precision": self.precision,
            "hanrt.value_range": f"{self.value_range[0]:g}..{self.value_range[1]:g}",
            "hanrt.margin": (str(self.margin) if self.margin is not None
                             else "none met the tiling study's rule" if self.margin_note else "not measured"),
        }

    def with_(self, **changes: Any) -> "ModelInfo":
        return replace(self, **changes)


#: Where an Upscaler's margin came from: ``"explicit"`` (asked for), ``"model"`` (measured, recorded
#: in the model's description) or ``"default"`` (:data:`DEFAULT_MARGIN`: not measured for this model).
MarginSource = Literal["explicit", "model", "default"]


def resolve_margin(margin: int | None, info: ModelInfo) -> tuple[int, MarginSource]:
    """The context margin (input pixels) to tile ``info``'s model with, and where it came from:
    an explicit ``margin`` (not ``None``) > the margin recorded in the model (``info.margin``,
    measured) > :data:`DEFAULT_MARGIN`."""
    if margin is not None:
        return int(margin), "explicit"
    if info.margin is not None:
        return int(info.margin), "model"
    return DEFAULT_MARGIN, "default"


def describe_margin(margin: int, source: MarginSource, note: str = "") -> str:
    """``"4 (measured, recorded in the model)"``-style text for logs, ``hanrt info`` and benchmarks;
    ``note``: the model's :attr:`ModelInfo.margin_note`, said for the default and the recorded margin."""
    return f"{margin} (" + {"explicit": "asked for",
                           "model": "measured, recorded in the model" + (f"; {note}" if note else ""),
                           "default": f"default: {note or 'not measured for this model'}"}[source] + ")"


# --- ONNX metadata without onnx -------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _read_varint_file(f) -> int | None:
    result = 0
    shift = 0
    while True:
        c = f.read(1)
        if not c:
            if shift == 0:
                return None
            raise ValueError("truncated varint")
        b = c[0]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _parse_entry(buf: bytes) -> tuple[str, str]:
    key = value = ""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field_no, wire = tag >> 3, tag & 7
        if wire != 2:
            raise ValueError("unexpected wire type in metadata entry")
        n, pos = _varint(buf, pos)
        s = buf[pos:pos + n].decode("utf-8")
        pos += n
        if field_no == 1:
            key = s
        elif field_no == 2:
            value = s
    return key, value


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the ``metadata_props`` of an ONNX file as a dict, reading only what is needed.

    Raises :class:`InputError` if the file is missing or not an ONNX model.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"model {str(p)!r} does not exist.")
    out: dict[str, str] = {}
    seen_ir = False
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            while True:
                tag = _read_varint_file(f)
                if tag is None:
                    break
                field_no, wire = tag >> 3, tag & 7
                if field_no == 0:
                    raise ValueError("field number 0")
                if wire == 0:
                    v = _read_varint_file(f)
                    if v is None:
                        raise ValueError("truncated")
                    if field_no == 1:
                        seen_ir = True
                elif wire == 2:
                    n = _read_varint_file(f)
                    if n is None or f.tell() + n > size:
                        raise ValueError("length past end of file")
                    if field_no == 14:
                        k, v2 = _parse_entry(f.read(n))
                        out[k] = v2
                    else:
                        f.seek(n, os.SEEK_CUR)
                elif wire == 1:
                    f.seek(8, os.SEEK_CUR)
                elif wire == 5:
                    f.seek(4, os.SEEK_CUR)
                else:
                    raise ValueError(f"wire type {wire}")
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise InputError(f"{str(p)!r} is not an ONNX model or is truncated ({exc}).") from None
    if not seen_ir:
        raise InputError(f"{str(p)!r} is not an ONNX model (no ir_version field).")
    return out


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read the hanrt description of an ``.onnx`` file or an engine's ``.json`` sidecar."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        meta = read_onnx_metadata(p)
        if METADATA_KEY not in meta:
            raise ModelError(
                f"{str(p)!r} carries no hanrt description (metadata key {METADATA_KEY!r}); it was "
                f"not exported by hanrt. Export it with: hanrt export --checkpoint CKPT --output {p.name}"
            )
        return ModelInfo.from_json(meta[METADATA_KEY], source=str(p))
    side = p if p.suffix.lower() == ".json" else p.with_suffix(p.suffix + ".json")
    if not side.is_file():
        raise InputError(f"no description for {str(p)!r}: expected its sidecar {str(side)!r}.")
    try:
        d = json.loads(side.read_text())
    except ValueError as exc:
        raise InputError(f"sidecar {str(side)!r} is not valid JSON ({exc}).") from None
    mi = d.get("model_info", d)
    return ModelInfo.from_json(json.dumps(mi), source=str(side))
