"""Backend selection: ``--backend auto`` or the name of a registered backend.

A backend is one :class:`~hanrt.backends.base.BackendSpec` (name, extra, file kinds, a probe that
answers available-or-why, open), registered as an entry point of group ``hanrt.backends``
(:mod:`hanrt.plugins`; hanrt's own in ``pyproject.toml``). This module holds no list of them:

- ``trt``: a TensorRT engine (:mod:`hanrt.backends.tensorrt`, ``'hanrt[trt]'``; JetPack on Jetson);
- ``ort-cuda`` / ``ort-cpu``: an ``.onnx`` graph on ONNX Runtime (:mod:`hanrt.backends.onnxrt`);
- ``torch``: a ``.pt`` checkpoint in PyTorch, registered by the host-side package (``'hanrt[export]'``);
- ``triton``: remote Triton Inference Servers (``--server``; :mod:`hanrt.backends.triton`), never
  picked by ``auto`` for a file (``auto`` with servers means it).

``auto`` walks the specs that run the model's file kind in priority order and takes the first
whose probe answers yes; it logs which one and why, and :func:`choose_backend` returns the same as
data. Every backend module is imported lazily, so this package needs only numpy (tier 0).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .. import plugins
from ..errors import MissingDependencyError, UsageError
from .base import (Backend, BackendSpec, FileKind, OpenOptions, OrtConfig, Probe, Slot, TorchConfig,
                   TrtConfig)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSpec",
    "Slot",
    "Choice",
    "OpenOptions",
    "OrtConfig",
    "Probe",
    "TorchConfig",
    "TrtConfig",
    "backend_names",
    "specs",
    "get_spec",
    "model_kind",
    "choose_backend",
    "open_backend",
    "remote_backend",
]

log = logging.getLogger(__name__)


def __getattr__(name: str):
    if name == "BACKENDS":  # computed on first use: the registered names, auto first
        return backend_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Choice:
    """The backend picked for a model and the reason, in words."""

    name: str
    reason: str


def backend_names() -> tuple[str, ...]:
    """Every ``--backend`` value, ``auto`` first (from the registrations' names: imports nothing)."""
    return ("auto", *(e.name for e in plugins.entries(plugins.BACKENDS)))


_loaded: dict[str, BackendSpec | str] = {}


def _load(entry: plugins.Entry) -> BackendSpec | str:
    """The spec behind ``entry``, or why it cannot be loaded (a plugin whose package is gone)."""
    key = f"{entry.name}={entry.value}"
    if key not in _loaded:
        try:
            spec = entry.load()
        except ImportError as exc:
            _loaded[key] = f"registered as {entry.value} (by {entry.source}) but cannot be imported: {exc}"
        else:
            if not isinstance(spec, BackendSpec) or spec.name != entry.name:
                raise TypeError(f"entry point {entry.name} = {entry.value} (by {entry.source}) is not a "
                                f"BackendSpec named {entry.name!r}: {spec!r}")
            _loaded[key] = spec
    return _loaded[key]


def specs() -> tuple[BackendSpec, ...]:
    """Every loadable backend spec, in ``auto``'s order (priority, then name)."""
    got = [s for s in map(_load, plugins.entries(plugins.BACKENDS)) if isinstance(s, BackendSpec)]
    return tuple(sorted(got, key=lambda s: (s.priority, s.name)))


def get_spec(name: str) -> BackendSpec:
    """The spec registered as ``name``; UsageError if none is, MissingDependencyError if it cannot load."""
    for e in plugins.entries(plugins.BACKENDS):
        if e.name == name:
            spec = _load(e)
            if isinstance(spec, str):
                raise MissingDependencyError(f"backend {name!r} is {spec}.")
            return spec
    raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(backend_names())}.")


def _kinds() -> list[FileKind]:
    seen: dict[str, FileKind] = {}
    for s in specs():
        for k in s.kinds:
            seen.setdefault(k.name, k)
    return list(seen.values())


def file_kind(path: str | os.PathLike) -> FileKind:
    """The :class:`FileKind` of ``path`` from its suffix (among the registered backends' kinds)."""
    suf = Path(path).suffix.lower()
    kinds = _kinds()
    for k in kinds:
        if suf in k.suffixes:
            return k
    known = "; ".join(f"{'/'.join(k.suffixes)} ({k.label[k.label.index(' ') + 1:]})" for k in kinds if k.suffixes)
    raise UsageError(f"cannot tell what {str(path)!r} is from its suffix: expected {known}.")


def model_kind(path: str | os.PathLike) -> str:
    """The name of ``path``'s file kind (``"onnx"``, ``"engine"``, ``"torch"``...); UsageError otherwise."""
    return file_kind(path).name


def _names(items: list[BackendSpec]) -> str:
    return ", ".join(s.name for s in items)


def choose_backend(
    model: str | os.PathLike,
    requested: str = "auto",
    *,
    probes: Mapping[str, Probe] | None = None,
) -> Choice:
    """Decide which backend runs ``model``. ``probes`` overrides named backends' probes (tests);
    by default each candidate is asked. ``auto`` walks the specs that run the model's file kind."""
    if requested != "auto":
        spec = get_spec(requested)
        if spec.remote:  # the model is a name on the servers, not a local file
            return Choice(spec.name, f"requested: {spec.summary or spec.name}")
        kind, name = file_kind(model), Path(model).name
        if not spec.runs(kind):
            able = [s for s in specs() if s.runs(kind)]
            how = next((dict(k.make)[kind.name] for k in spec.kinds if kind.name in dict(k.make)), "")
            how = how.format(file=name)
            runs = " or ".join(k.label for k in spec.kinds)
            other = (f"only --backend {able[0].name} (or auto) runs it" if len(able) == 1 else
                     f"--backend {_names(able)} (or auto) run it" if able else "no registered backend runs it")
            raise UsageError(f"{name} is {kind.label}: --backend {spec.name} runs {runs}, and {other}."
                             + (f" To use {spec.name}, {how}." if how else ""))
        return Choice(spec.name, "requested")
    kind, name = file_kind(model), Path(model).name
    tried: list[tuple[BackendSpec, Probe]] = []
    for spec in specs():
        if not spec.auto or not spec.runs(kind):
            continue
        probe = (probes or {}).get(spec.name) or spec.probe()
        if probe.ok:
            skipped = "".join(f"; not {s.name}: {p.why}" for s, p in tried)
            return Choice(spec.name, f"{name} is {kind.label}; {probe.why}{skipped}")
        tried.append((spec, probe))
    extras = " or ".join(f"'hanrt[{s.extra}]'" for s, p in tried if "pip install" not in p.why)
    raise MissingDependencyError(
        f"no backend can run {name} ({kind.label}) here: "
        + ("; ".join(f"{s.name}: {p.why}" for s, p in tried) or "no registered backend runs it")
        + (f". Install one with pip install {extras}." if extras else ".")
    )


def remote_backend() -> BackendSpec:
    """The first registered backend for models on servers (``auto`` with ``--server`` means it)."""
    for s in specs():
        if s.remote:
            return s
    raise UsageError("--server needs a backend for models on servers (hanrt[triton]), and none is registered.")


def open_backend(
    model: str | os.PathLike,
    requested: str = "auto",
    *,
    device_id: int = 0,
    threads: int = 0,
    fp16: bool = False,
    slots: int = 2,
    servers: tuple[str, ...] = (),
) -> Backend:
    """Open the backend :func:`choose_backend` picks for ``model``; ``auto`` logs the choice.
    ``servers``: for a remote backend (``requested="triton"``; ``model`` is then the model's name
    or a file whose stem is that name)."""
    choice = choose_backend(model, requested)
    if requested == "auto":
        log.info("backend: %s (%s)", choice.name, choice.reason)
    options = OpenOptions(device_id=device_id, threads=threads, fp16=fp16, slots=slots, servers=tuple(servers))
    return get_spec(choice.name).open(model, options)
