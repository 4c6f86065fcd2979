"""Rewrite the hanrt description of an exported ONNX graph, touching nothing else.

The description (:class:`hanrt.model_info.ModelInfo`) lives in the graph file's ``metadata_props``
(``hanrt.model_info`` plus flat keys). Some of it is measured after export -- the tiling margin a
model needs (``python -m hanrt_bench.tiling_study --write-margin``) -- and is written back here:
the file is parsed with ``onnx`` (external data is not loaded), only ``metadata_props`` change, and
the result is written through :func:`hanrt.io.atomic.atomic_output` (a temporary file renamed over
the original: a failure leaves the original as it was). The graph -- weights included -- is
checked to serialize to the very bytes it had before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hanrt.errors import ModelError
from hanrt.io.atomic import atomic_output
from hanrt.model_info import METADATA_KEY, ModelInfo

__all__ = ["set_model_info_props", "update_model_info"]


def set_model_info_props(m: Any, info: ModelInfo) -> None:
    """Write ``info``'s ``metadata_props`` (:meth:`ModelInfo.metadata_props`) into the ``onnx``
    ModelProto ``m``, replacing the hanrt keys and keeping every other key, in place."""
    props = info.metadata_props()
    keep = [(p.key, p.value) for p in m.metadata_props if p.key not in props]
    del m.metadata_props[:]
    for k, v in [*keep, *props.items()]:
        m.metadata_props.add(key=k, value=v)


def update_model_info(path: str | os.PathLike, **changes: Any) -> ModelInfo:
    """Replace fields of the hanrt description of the ``.onnx`` file ``path`` (e.g. ``margin=4``),
    atomically; return the new description. Only ``metadata_props`` change: the graph (weights
    included) is verified byte-identical before the file is replaced. Raises
    :class:`~hanrt.errors.ModelError` when the file carries no hanrt description."""
    import onnx

    p = Path(path)
    m = onnx.load(str(p), load_external_data=False)
    props = {e.key: e.value for e in m.metadata_props}
    if METADATA_KEY not in props:
        raise ModelError(f"{str(p)!r} carries no hanrt description ({METADATA_KEY!r}); export it with hanrt "
                         f"export first.")
    info = ModelInfo.from_json(props[METADATA_KEY], source=str(p)).with_(**changes)
    info.validate(source=str(p))
    graph = m.graph.SerializeToString()
    set_model_info_props(m, info)
    data = m.SerializeToString()
    check = onnx.load_from_string(data)
    if check.graph.SerializeToString() != graph:  # pragma: no cover - protobuf guarantees it
        raise ModelError(f"{str(p)!r}: rewriting the description changed the graph; nothing was written.")
    with atomic_output(p) as tmp:
        tmp.write_bytes(data)
    return info
