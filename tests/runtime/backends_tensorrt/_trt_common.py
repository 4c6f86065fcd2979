"""Shared helpers of the TensorRT tests (targets, model descriptions, build options)."""

from __future__ import annotations

import dataclasses

from hanrt.backends import tensorrt as E
from hanrt.model_info import ModelInfo

ORIN = E.Target("10.3.0", "Orin", (8, 7))
H100 = E.Target("10.7.0", "NVIDIA H100 80GB HBM3", (9, 0))
INFO = ModelInfo(scale=4, precision="fp16", fp32_nodes=("/la/MatMul", "/la/Softmax"))
INFO_U8 = ModelInfo(scale=4, io="uint8")


def opts(*tiles, batch=4, **kw):
    return E.BuildOptions(profiles=tuple(E.profiles_from_tiles(list(tiles) or [(96, 96)], batch)), **kw)


def fp(target=ORIN, sha="a" * 64, info=INFO, options=None, slots=1):
    """A fingerprint; ``slots > 1``: of an engine an earlier hanrt built with ``hanrt build --slots N``
    (every profile N times in a row)."""
    f = E.Fingerprint.make(target=target, onnx_sha256=sha, info=info, options=options or opts())
    if slots > 1:
        f = dataclasses.replace(f, profiles=tuple(p for p in f.profiles for _ in range(slots)), slots=slots)
    return f
