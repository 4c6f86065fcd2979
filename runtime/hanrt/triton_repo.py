"""A Triton Inference Server model repository for a hanrt model (``hanrt export --triton-repo``).

Writes ``DIR/NAME/config.pbtxt`` and ``DIR/NAME/1/model.onnx`` (or ``model.plan``)::

    DIR/
      hanrt_x4/
        config.pbtxt
        1/model.onnx

The configuration is generated from the model's :class:`~hanrt.model_info.ModelInfo` (and, for a
TensorRT plan, its sidecar's optimization profiles); every field and the reason for its default:

- ``backend``: ``onnxruntime`` for an ``.onnx`` graph, ``tensorrt`` for a plan (which must have been
  built with the TensorRT version of the Triton server that loads it, on the same GPU model).
- ``max_batch_size``: the tiles one execution takes. Default 8 for ONNX (the graph's batch
  dimension is dynamic; 8 tiles of 128x128 keep a Jetson's memory in bounds while filling a
  data-centre GPU's SMs); for a plan, the smallest batch that every optimization profile accepts
  (a larger config value would be refused by Triton when it loads the engine).
- ``input``/``output``: the graph's own tensor names; ``TYPE_FP32`` with dims ``[3, -1, -1]``
  (float NCHW, batch dimension implied by ``max_batch_size``) or ``TYPE_UINT8`` with
  ``[-1, -1, 3]`` (uint8 NHWC graphs carry their own pre/post-processing). Height and width stay
  variable: the client's tiler picks the tile.
- ``dynamic_batching``: ``preferred_batch_size`` = ``max_batch_size`` and
  ``max_queue_delay_microseconds`` = 1000: requests of several clients (or the short last batch of
  an image) are merged into full batches, and waiting up to 1 ms for one costs little next to a
  tile's inference (tens of ms on a GPU for 8 tiles of 128 px, far more on a CPU).
- ``instance_group``: ``KIND_GPU`` with ``count`` 2 per GPU (two instances overlap one batch's
  host-device copies with another's compute, as hanrt's two TensorRT slots do) on every GPU unless
  ``gpus`` names some; ``KIND_CPU`` with ``count`` 1 (ONNX Runtime already spreads one inference
  over all cores; more instances only compete for them).
- ``optimization.execution_accelerators.gpu_execution_accelerator``: ``tensorrt`` for ONNX on
  GPUs, with ``precision_mode`` ``FP32`` (precision lives in the graph: an FP16 graph runs its
  FP16 nodes in FP16, and TensorRT is not allowed to lower the layer attention that must stay
  FP32) and ``max_workspace_size_bytes`` 1 GiB (enough for HAN's tactics and within a Jetson's
  budget). Left out for INT8 (Q/DQ) graphs, which ONNX Runtime's TensorRT accelerator builds only
  with INT8 enabled and a calibration table, for CPU instances, and on request (``accelerator=False``).
- ``parameters`` ``hanrt.model_info``: the model's description as JSON, so hanrt's Triton client
  knows the scale and value range without a local copy of the model (backends ignore keys they do
  not know).

Needs neither torch, onnx nor tritonclient: the text format is written here and read back in the
tests with ``tritonclient``'s ``model_config_pb2``.

**Not loaded by a Triton server here:** the Triton binary that PyTriton ships (which the tests
run) holds only the Python backend, and the stock container (with the ``onnxruntime`` and
``tensorrt`` backends) cannot be fetched here; the generated configurations are checked field by
field against Triton's own schema (``model_config_pb2``) in the tests, and the ``KIND_GPU``/
``tensorrt`` paths have not run on a GPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import InputError, ModelError, OutputError, UsageError
from .backends.base import ENGINE
from .model_info import ModelInfo, read_model_info

__all__ = [
    "RepoSettings",
    "TritonModel",
    "MODEL_INFO_PARAMETER",
    "DEFAULT_MAX_BATCH",
    "resolve_model",
    "triton_model",
    "config_text",
    "write_repository",
    "model_name_for",
]

#: The ``parameters`` key that carries the model's :class:`ModelInfo` JSON in ``config.pbtxt``.
MODEL_INFO_PARAMETER = "hanrt.model_info"
DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 1000
DEFAULT_GPU_INSTANCES = 2
DEFAULT_CPU_INSTANCES = 1
TRT_WORKSPACE = 1 << 30
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, kw_only=True)
class RepoSettings:
    """How the model is served. ``kind``: ``"gpu"`` (``KIND_GPU``) or ``"cpu"`` (``KIND_CPU``; ONNX
    only). ``instances``: per GPU (``KIND_GPU``) or in all (``KIND_CPU``); ``None``: 2 per GPU, 1 on
    the CPU. ``gpus``: device ids (empty: every GPU). ``max_batch``: ``None``: 8 for ONNX, the
    plan's profiles for TensorRT. ``accelerator``: TensorRT accelerator for ONNX on GPUs (where it
    fits, see the module docstring). ``name``: the model's name in the repository (``None``: the
    file's stem)."""

    name: str | None = None
    kind: Literal["gpu", "cpu"] = "gpu"
    instances: int | None = None
    gpus: tuple[int, ...] = ()
    max_batch: int | None = None
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    accelerator: bool = True


@dataclass(frozen=True)
class TritonModel:
    """The resolved configuration of one model (what :func:`config_text` writes)."""

    name: str
    backend: Literal["onnxruntime", "tensorrt"]
    model_filename: str
    info: ModelInfo
    max_batch_size: int
    data_type: str
    input_dims: tuple[int, ...]
    output_dims: tuple[int, ...]
    kind: Literal["KIND_GPU", "KIND_CPU"]
    instances: int
    gpus: tuple[int, ...] = ()
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    trt_accelerator: dict[str, str] = field(default_factory=dict)


def resolve_model(spec: str | os.PathLike) -> Path:
    """A model file from ``spec``: a path to an ``.onnx`` graph or a TensorRT plan, or the name of a
    bundled model (``hanrt_x4``, ``hanrt_x4.onnx``, ``hanrt_x4_fp16``...). InputError otherwise."""
    p = Path(spec)
    if p.is_file():
        return p
    text = str(spec)
    if os.sep not in text and "/" not in text:
        from .upscaler import default_model_path

        for cand in (text, f"{text}.onnx"):
            try:
                return default_model_path(cand)
            except ModelError:
                continue
    raise InputError(
        f"model {text!r} is neither a file nor a bundled model: pass an .onnx graph, a TensorRT "
        f"plan built on the target (hanrt build), or a bundled name such as hanrt_x4."
    )


def model_name_for(path: str | os.PathLike) -> str:
    """The default repository name of a model file: its stem (``hanrt_x4.onnx`` -> ``hanrt_x4``)."""
    return Path(path).stem


def _plan_max_batch(path: Path) -> int:
    from .backends.tensorrt.cache import read_sidecar  # lazy: only plans need it

    side = read_sidecar(path)
    profiles = side.profiles
    if not profiles:
        raise ModelError(f"engine {path.name}: its sidecar lists no optimization profile.")
    if any(p.min[0] > 1 for p in profiles):
        raise ModelError(
            f"engine {path.name} was built for batches of at least {max(p.min[0] for p in profiles)}; "
            f"Triton sends batches from 1 up, so rebuild it with a minimum batch of 1 (hanrt build --batch 1xN)."
        )
    return min(p.max[0] for p in profiles)


def triton_model(model: str | os.PathLike, settings: RepoSettings = RepoSettings()) -> TritonModel:
    """Resolve ``model`` (see :func:`resolve_model`) and ``settings`` into a :class:`TritonModel`."""
    path = resolve_model(model)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        backend, filename = "onnxruntime", "model.onnx"
    elif suffix in ENGINE.suffixes:
        backend, filename = "tensorrt", "model.plan"
    else:
        raise UsageError(
            f"{path.name}: a Triton repository holds an .onnx graph or a TensorRT plan (.plan/.engine); "
            f"export a checkpoint first (hanrt export --checkpoint {path.name} --output model.onnx)."
        )
    info = read_model_info(path)
    name = settings.name or model_name_for(path)
    if not _NAME_RE.match(name):
        raise UsageError(f"model name {name!r}: use letters, digits, '_', '-' and '.' (not first).")
    if settings.kind not in ("gpu", "cpu"):
        raise UsageError(f"kind must be 'gpu' or 'cpu', got {settings.kind!r}.")
    if backend == "tensorrt" and settings.kind == "cpu":
        raise UsageError(f"{path.name} is a TensorRT plan: it runs on GPUs only (KIND_GPU); "
                         f"for CPU instances export the .onnx graph.")
    if backend == "tensorrt":
        limit = _plan_max_batch(path)
        max_batch = limit if settings.max_batch is None else settings.max_batch
        if max_batch > limit:
            raise UsageError(f"max batch {max_batch} exceeds what engine {path.name} accepts ({limit}); "
                             f"rebuild it with a larger batch (hanrt build --batch 1x{max_batch}).")
    else:
        max_batch = DEFAULT_MAX_BATCH if settings.max_batch is None else settings.max_batch
    if max_batch < 1:
        raise UsageError(f"max batch must be >= 1, got {max_batch}.")
    if settings.instances is not None and settings.instances < 1:
        raise UsageError(f"instances must be >= 1, got {settings.instances}.")
    if settings.queue_delay_us < 0:
        raise UsageError(f"queue delay must be >= 0 microseconds, got {settings.queue_delay_us}.")
    if any(g < 0 for g in settings.gpus):
        raise UsageError(f"GPU ids must be >= 0, got {list(settings.gpus)}.")
    gpu = settings.kind == "gpu"
    instances = settings.instances or (DEFAULT_GPU_INSTANCES if gpu else DEFAULT_CPU_INSTANCES)
    c = info.n_colors
    dims_in = (c, -1, -1) if info.layout == "NCHW" else (-1, -1, c)
    accel: dict[str, str] = {}
    if gpu and backend == "onnxruntime" and settings.accelerator and info.precision != "int8":
        accel = {"precision_mode": "FP32", "max_workspace_size_bytes": str(TRT_WORKSPACE)}
    return TritonModel(
        name=name, backend=backend, model_filename=filename, info=info, max_batch_size=int(max_batch),
        data_type="TYPE_UINT8" if info.io == "uint8" else "TYPE_FP32",
        input_dims=dims_in, output_dims=dims_in,
        kind="KIND_GPU" if gpu else "KIND_CPU", instances=int(instances),
        gpus=tuple(settings.gpus) if gpu else (), queue_delay_us=int(settings.queue_delay_us),
        trt_accelerator=accel,
    )


def _q(text: str) -> str:
    """A protobuf text-format string literal (JSON's escaping is a subset it reads)."""
    return json.dumps(text, ensure_ascii=True)


def config_text(m: TritonModel) -> str:
    """The ``config.pbtxt`` of ``m`` (protobuf text format of Triton's ``ModelConfig``)."""
    dims = lambda d: ", ".join(str(x) for x in d)  # noqa: E731
    lines = [
        f"name: {_q(m.name)}",
        f"backend: {_q(m.backend)}",
        f"default_model_filename: {_q(m.model_filename)}",
        f"max_batch_size: {m.max_batch_size}",
        "input [",
        "  {",
        f"    name: {_q(m.info.input_name)}",
        f"    data_type: {m.data_type}",
        f"    dims: [ {dims(m.input_dims)} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f"    name: {_q(m.info.output_name)}",
        f"    data_type: {m.data_type}",
        f"    dims: [ {dims(m.output_dims)} ]",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {m.max_batch_size} ]",
        f"  max_queue_delay_microseconds: {m.queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {m.instances}",
        f"    kind: {m.kind}",
    ]
    if m.gpus:
        lines.append(f"    gpus: [ {dims(m.gpus)} ]")
    lines += ["  }", "]"]
    if m.trt_accelerator:
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "tensorrt"',
        ]
        for k, v in m.trt_accelerator.items():
            lines.append(f"        parameters {{ key: {_q(k)} value: {_q(v)} }}")
        lines += ["      }", "    ]", "  }", "}"]
    lines += [
        "parameters {",
        f"  key: {_q(MODEL_INFO_PARAMETER)}",
        f"  value {{ string_value: {_q(m.info.to_json())} }}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def write_repository(model: str | os.PathLike, repo: str | os.PathLike, settings: RepoSettings = RepoSettings(),
                     *, overwrite: bool = False) -> Path:
    """Write ``repo/NAME/config.pbtxt`` and ``repo/NAME/1/<model file>``; return ``repo/NAME``.

    ``repo`` is created if missing; other models in it are left alone. An existing ``repo/NAME``
    is refused (:class:`OutputError`) unless ``overwrite``. Each file is written to a temporary
    file and renamed into place, the configuration last, so a model folder with a
    ``config.pbtxt`` is always complete.
    """
    from .io.atomic import atomic_output

    m = triton_model(model, settings)
    src = resolve_model(model)
    root = Path(repo)
    if root.exists() and not root.is_dir():
        raise OutputError(f"--triton-repo {str(root)!r} exists and is not a folder.")
    folder = root / m.name
    cfg = folder / "config.pbtxt"
    if cfg.exists() and not overwrite:
        raise OutputError(f"{str(cfg)!r} exists; pass --overwrite to replace model {m.name!r} in the repository.")
    try:
        (folder / "1").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {str(folder / '1')!r}: {exc.strerror or exc}.") from None
    with atomic_output(folder / "1" / m.model_filename) as tmp:
        shutil.copyfile(src, tmp)
    with atomic_output(cfg) as tmp:
        tmp.write_text(config_text(m), encoding="utf-8")
    return folder
