"""TensorRT engines: fingerprint, cache, sidecar, locking and refusal -- the pure part.

An engine (serialized TensorRT plan) is bound to its GPU model, its TensorRT version, its ONNX
graph, its precision recipe and its shapes. hanrt therefore builds engines **on the target**,
stores each under a key made of everything that invalidates it, and refuses an engine that does
not match the running machine, naming the command that rebuilds it.

This module is stdlib + :mod:`hanrt.model_info` only and runs anywhere; every call into
``tensorrt`` lives in :mod:`hanrt.backends.tensorrt.build` and is injected into
:func:`get_or_build` as the ``builder`` / ``target`` arguments.

Layout on disk (cache directory ``$HANRT_CACHE_DIR`` or ``~/.cache/hanrt/engines``)::

    <stem>-<precision>-<key>.plan        the serialized engine (bytes as TensorRT wrote them)
    <stem>-<precision>-<key>.plan.json   the sidecar (format "hanrt-trt-engine", see Sidecar)
    <stem>-<precision>-<key>.lock        lock file (fcntl.flock) held while building

Writers take the lock, re-check for a finished engine (another process may have built it
while they waited), write plan and sidecar through :func:`hanrt.io.atomic.atomic_output`
(plan first, sidecar last): an engine counts as present only when its sidecar exists and
records the plan's size, so a crash never leaves a half-written engine that looks valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...errors import EngineMismatchError, InputError, ModelError, OutputError, UsageError
from ...io.atomic import atomic_output
from ...io.digest import sha256_file
from ...model_info import ModelInfo, read_model_info
from ..base import ENGINE
from .profiles import Profile, _fmt, base_profiles, check_profiles

log = logging.getLogger(__name__)

__all__ = [
    "BuildOptions",
    "Target",
    "Fingerprint",
    "Sidecar",
    "SIDECAR_FORMAT",
    "BuiltPlan",
    "EngineResult",
    "default_cache_dir",
    "engine_path",
    "sidecar_path",
    "file_lock",
    "timing_cache_file",
    "write_bytes_atomic",
    "read_sidecar",
    "write_engine",
    "check_compatible",
    "rebuild_command",
    "find_engine",
    "get_or_build",
]

SIDECAR_FORMAT = "hanrt-trt-engine"
SIDECAR_SCHEMA = 1
DEFAULT_WORKSPACE = 1 << 30  # 1 GiB: 8 GB Jetson boards run out of memory with TensorRT's default
DEFAULT_OPT_LEVEL = 3


# --- build options, target, fingerprint -------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """How an engine is built (all of it enters the fingerprint).

    - ``profiles``: one or more distinct optimization profiles (input pixels), one per tile shape
      (or ``--min/--opt/--max`` triple). Each is built once: since TensorRT 10.0 execution contexts
      share optimization profiles (see :mod:`hanrt.backends.tensorrt.profiles`), so any number of
      slots runs on one profile.
    - ``opt_level``: TensorRT builder optimization level 0..5 (higher: longer build, maybe faster).
    - ``workspace``: cap of TensorRT's workspace memory pool, bytes.
    - ``timing_cache``: the timing cache's base file name (not part of the key): the file used is
      :func:`timing_cache_file` of it, one per TensorRT version, GPU and compute capability.
    """

    profiles: tuple[Profile, ...]
    opt_level: int = DEFAULT_OPT_LEVEL
    workspace: int = DEFAULT_WORKSPACE
    timing_cache: str | None = None

    def __post_init__(self) -> None:
        if not self.profiles:
            raise UsageError("at least one optimization profile is needed.")
        twice = [p.describe() for i, p in enumerate(self.profiles) if p in self.profiles[:i]]
        if twice:
            raise UsageError(f"optimization profile {twice[0]} is given twice: every execution context "
                             f"shares the engine's profiles (TensorRT >= 10), so one of each is enough.")
        if not 0 <= int(self.opt_level) <= 5:
            raise UsageError(f"--opt-level must be 0..5, got {self.opt_level}.")
        if int(self.workspace) < 1 << 20:
            raise UsageError(f"workspace must be at least 1 MiB, got {self.workspace} bytes.")


@dataclass(frozen=True)
class Target:
    """The machine an engine is for: TensorRT version, GPU name, compute capability (major, minor)."""

    tensorrt: str
    gpu: str
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt} on {self.gpu!r} (compute capability {self.sm})"


@dataclass(frozen=True)
class Fingerprint:
    """Everything that makes an engine valid or not. ``key`` is a 16-hex digest of it.

    ``profiles`` lists every profile of the engine, in TensorRT's order. ``slots`` describes
    engines of earlier hanrt versions, whose ``hanrt build --slots N`` built every profile N times in
    a row (TensorRT 8.x ran concurrent contexts on distinct profiles only): their sidecars still
    read, and :attr:`Sidecar.base_profiles` gives one of each. hanrt builds every profile once now
    (``slots=1``, which is left out of the key, so keys are those of every ``slots=1`` engine before).
    """

    tensorrt: str
    gpu: str
    compute_capability: str
    onnx_sha256: str
    precision: str
    precision_recipe_sha256: str
    io: str
    layout: str
    profiles: tuple[dict[str, list[int]], ...]
    opt_level: int
    workspace: int
    slots: int = 1
    schema: int = SIDECAR_SCHEMA

    @classmethod
    def make(cls, *, target: Target, onnx_sha256: str, info: ModelInfo, options: BuildOptions) -> "Fingerprint":
        recipe = json.dumps({"precision": info.precision, "fp32_nodes": sorted(info.fp32_nodes)}, sort_keys=True)
        return cls(
            tensorrt=target.tensorrt, gpu=target.gpu, compute_capability=target.sm,
            onnx_sha256=onnx_sha256, precision=info.precision,
            precision_recipe_sha256=hashlib.sha256(recipe.encode()).hexdigest(),
            io=info.io, layout=info.layout,
            profiles=tuple(p.to_json() for p in options.profiles),
            opt_level=int(options.opt_level), workspace=int(options.workspace),
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = [dict(p) for p in self.profiles]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Fingerprint":
        known = set(cls.__dataclass_fields__)
        missing = known - set(d) - {"schema", "slots"}  # no slots: written before --slots, i.e. 1
        if missing:
            raise ModelError(f"engine fingerprint lacks {sorted(missing)}.")
        dd = {k: v for k, v in d.items() if k in known}
        dd["profiles"] = tuple(dict(p) for p in dd["profiles"])
        dd["slots"] = int(dd.get("slots", 1))
        return cls(**dd)

    def one_of_each(self) -> "Fingerprint":
        """This fingerprint with each profile once (``slots=1``): what hanrt builds today for the
        same settings. An engine of an earlier hanrt with replicated profiles works the same."""
        if self.slots == 1:
            return self
        profs = base_profiles(tuple(Profile.from_json(p) for p in self.profiles), self.slots)
        return dataclasses.replace(self, profiles=tuple(p.to_json() for p in profs), slots=1)

    @property
    def key(self) -> str:
        d = self.to_json()
        if d["slots"] == 1:
            del d["slots"]  # the key of every slots=1 engine, before and after --slots
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def target(self) -> Target:
        major, _, minor = self.compute_capability.partition(".")
        return Target(self.tensorrt, self.gpu, (int(major), int(minor or 0)))


# --- paths ------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$HANRT_CACHE_DIR``, else ``$XDG_CACHE_HOME/hanrt/engines``, else ``~/.cache/hanrt/engines``."""
    env = os.environ.get("HANRT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hanrt" / "engines"


def _safe_stem(stem: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "model"
    return s[:64]


def engine_path(cache_dir: str | os.PathLike, onnx_path: str | os.PathLike, fp: Fingerprint) -> Path:
    """``<cache_dir>/<onnx stem>-<precision>-<key>.plan`` (vs-mlrt's get_engine_path idea)."""
    return Path(cache_dir) / f"{_safe_stem(Path(onnx_path).stem)}-{fp.precision}-{fp.key}.plan"


def sidecar_path(plan: str | os.PathLike) -> Path:
    """The sidecar of a plan: ``<plan>.json`` (what :func:`hanrt.model_info.read_model_info` reads)."""
    p = Path(plan)
    return p.with_name(p.name + ".json")


def timing_cache_file(base: str | os.PathLike, target: Target) -> Path:
    """The timing cache file for ``target``: ``base`` with the TensorRT version, GPU name and compute
    capability added to its name (``timing.cache`` -> ``timing-10.3.0-Orin-sm87.cache``).

    A timing cache holds kernel timings of one GPU under one TensorRT version; TensorRT refuses a
    cache from another (hanrt loads it strictly), so every target keeps its own file.
    """
    b = Path(base)
    cc = f"sm{target.compute_capability[0]}{target.compute_capability[1]}"
    return b.with_name(f"{b.stem}-{_safe_stem(target.tensorrt)}-{_safe_stem(target.gpu)}-{cc}{b.suffix}")


def _lock_path(plan: Path) -> Path:
    return plan.with_suffix(".lock")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if needed) for the ``with`` block.

    Another process asking for the same lock waits (up to ``timeout_s``, then ``OutputError``).
    The lock is released when the block ends or the process dies. Without ``fcntl`` (Windows)
    the block runs unlocked, with a warning.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        log.warning("no fcntl: engine cache writes are not locked on this platform")
        yield
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise OutputError(f"timed out after {timeout_s:g} s waiting for the lock {str(p)!r} "
                                      f"(another hanrt build is running).") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --- sidecar ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sidecar:
    """The JSON beside a plan: what it was built from and for.

    ``io``: one dict per I/O tensor: name, mode (input/output), dtype, layout, and the shapes
    per profile. ``build``: the arguments that rebuild it (for the refusal message), build time.
    """

    fingerprint: Fingerprint
    model_info: ModelInfo
    plan_bytes: int
    plan_sha256: str
    onnx_path: str
    io: tuple[dict[str, Any], ...] = ()
    build: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.fingerprint.key

    def to_json(self) -> str:
        d = {
            "format": SIDECAR_FORMAT,
            "schema": SIDECAR_SCHEMA,
            "key": self.key,
            "fingerprint": self.fingerprint.to_json(),
            "model_info": json.loads(self.model_info.to_json()),
            "plan_bytes": self.plan_bytes,
            "plan_sha256": self.plan_sha256,
            "onnx_path": self.onnx_path,
            "io": list(self.io),
            "build": dict(self.build),
        }
        return json.dumps(d, indent=2, sort_keys=True)

    @property
    def profiles(self) -> tuple[Profile, ...]:
        """Every optimization profile of the engine, in TensorRT's order (index = profile index)."""
        return tuple(Profile.from_json(p) for p in self.fingerprint.profiles)

    @property
    def slots(self) -> int:
        """How many times each profile was built: 1, except for engines of earlier hanrt versions
        built with ``hanrt build --slots N`` (see :class:`Fingerprint`)."""
        return self.fingerprint.slots

    @property
    def base_profiles(self) -> tuple[Profile, ...]:
        """Each profile once: ``profiles[t * slots]`` for tile shape ``t``."""
        return base_profiles(self.profiles, self.slots)


def read_sidecar(plan: str | os.PathLike) -> Sidecar:
    """Read and validate the sidecar of ``plan`` (a ``.plan`` or its ``.plan.json``).

    Raises :class:`InputError` (missing/unreadable) or :class:`ModelError` (not a hanrt sidecar).
    """
    p = Path(plan)
    side = p if p.suffix.lower() == ".json" else sidecar_path(p)
    if not side.is_file():
        raise InputError(f"engine {str(p)!r} has no sidecar {side.name!r}: it was not built by hanrt build "
                         f"(or the build did not finish). Build it with: hanrt build MODEL.onnx --tile HxW --batch N")
    try:
        d = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"sidecar {str(side)!r} cannot be read ({exc}).") from None
    if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
        raise ModelError(f"{str(side)!r} is not a hanrt engine sidecar (format {d.get('format') if isinstance(d, dict) else None!r}).")
    if int(d.get("schema", 0)) > SIDECAR_SCHEMA:
        raise ModelError(f"{str(side)!r} has sidecar schema {d['schema']}; this hanrt reads up to "
                         f"{SIDECAR_SCHEMA}: upgrade hanrt.")
    try:
        fp = Fingerprint.from_json(d["fingerprint"])
        info = ModelInfo.from_json(json.dumps(d["model_info"]), source=str(side))
        sc = Sidecar(fp, info, int(d["plan_bytes"]), str(d["plan_sha256"]), str(d.get("onnx_path", "")),
                     tuple(d.get("io", ())), dict(d.get("build", {})))
        base_profiles(sc.profiles, sc.slots)  # UsageError unless a replication by its slots
        return sc
    except (KeyError, TypeError, ValueError, UsageError) as exc:
        raise ModelError(f"sidecar {str(side)!r} is malformed ({exc}).") from None


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`hanrt.io.atomic.atomic_output` (temp file, fsync, rename)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_engine(plan: str | os.PathLike, data: bytes, sidecar: Sidecar) -> Path:
    """Write ``data`` to ``plan`` and its sidecar atomically (plan first, sidecar last).

    ``sidecar.plan_bytes``/``plan_sha256`` must describe ``data``. Call under :func:`file_lock`.
    """
    p = Path(plan)
    if sidecar.plan_bytes != len(data) or sidecar.plan_sha256 != hashlib.sha256(data).hexdigest():
        raise ValueError("sidecar does not describe the plan bytes")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        side = sidecar_path(p)
        with contextlib.suppress(FileNotFoundError):
            side.unlink()  # an old sidecar must not vouch for the new plan while it is written
        write_bytes_atomic(p, data)
        write_bytes_atomic(side, sidecar.to_json().encode())
    except OSError as exc:
        raise OutputError(f"cannot write engine {str(p)!r} ({exc}).") from None
    return p


# --- compatibility and refusal ----------------------------------------------------------------

def rebuild_command(sidecar: Sidecar, *, onnx_path: str | None = None, output: str | None = None,
                    force: bool = True) -> str:
    """The ``hanrt build`` command that rebuilds the engine a sidecar describes, with ``--force``
    (each profile once, also for an engine of an earlier hanrt built with ``--slots N``).

    ``force=False`` leaves ``--force`` out: the command that *reuses* the engine (same settings).
    """
    return _build_command(sidecar.fingerprint, onnx_path or sidecar.onnx_path or "MODEL.onnx", output=output,
                          force=force)


def _build_command(fp: Fingerprint, onnx_path: str, *, output: str | None = None, force: bool = True) -> str:
    """The ``hanrt build`` command whose options give fingerprint ``fp`` (for ``onnx_path`` on the
    target it names); see :func:`rebuild_command`."""
    args = ["hanrt", "build", onnx_path]
    profs = tuple(Profile.from_json(p) for p in fp.one_of_each().profiles)
    simple = all(p.max == p.opt and p.min[1:] == p.opt[1:] for p in profs) and len({p.opt[0] for p in profs}) == 1 \
        and len({p.min[0] for p in profs}) == 1 and profs[0].min[0] == 1
    if simple:
        for p in profs:
            args += ["--tile", f"{p.opt[1]}x{p.opt[2]}"]
        args += ["--batch", str(profs[0].opt[0])]
    else:
        for p in profs:
            args += ["--min", _fmt(p.min), "--opt", _fmt(p.opt), "--max", _fmt(p.max)]
    if fp.opt_level != DEFAULT_OPT_LEVEL:
        args += ["--opt-level", str(fp.opt_level)]
    if fp.workspace != DEFAULT_WORKSPACE:
        args += ["--workspace", f"{fp.workspace >> 20}M"]
    if output:
        args += ["--output", output]
    if force:
        args.append("--force")
    return shlex.join(args)


def check_compatible(sidecar: Sidecar, running: Target, *, plan: str | os.PathLike = "",
                     onnx_sha256: str | None = None, command: str | None = None) -> None:
    """Refuse (``EngineMismatchError``) an engine built for another TensorRT, GPU or ONNX file.

    The message says what it was built for, what runs here and the command that rebuilds it:
    ``command`` if given (:func:`get_or_build` passes the settings it was asked for, which may
    differ from the old engine's), else the one that rebuilds the sidecar's own settings.
    """
    built = sidecar.fingerprint.target
    why: list[str] = []
    if built.tensorrt != running.tensorrt:
        why.append(f"TensorRT {built.tensorrt} != {running.tensorrt}")
    if built.compute_capability != running.compute_capability:
        why.append(f"compute capability {built.sm} != {running.sm}")
    if built.gpu != running.gpu:
        why.append(f"GPU {built.gpu!r} != {running.gpu!r}")
    if onnx_sha256 is not None and onnx_sha256 != sidecar.fingerprint.onnx_sha256:
        why.append("the ONNX file changed since the engine was built (sha256 differs)")
    if why:
        name = Path(plan).name if plan else "the engine"
        out = str(plan) if plan else None
        raise EngineMismatchError(
            f"{name} was built for {built.describe()}, this machine has {running.describe()} "
            f"({'; '.join(why)}). Engines are not portable; rebuild it here with: "
            f"{command or rebuild_command(sidecar, output=out)}")


def find_engine(plan: str | os.PathLike, running: Target, *, onnx_sha256: str | None = None,
                verify_bytes: bool = False, command: str | None = None) -> Sidecar | None:
    """Return the sidecar of a finished, compatible engine at ``plan``; ``None`` if absent.

    Absent means: no plan, no sidecar, or a plan whose size (or sha256 with ``verify_bytes``)
    differs from the sidecar (an interrupted write). A present but incompatible engine raises
    :class:`EngineMismatchError` (suggesting ``command``, see :func:`check_compatible`).
    """
    p = Path(plan)
    if not p.is_file() or not sidecar_path(p).is_file():
        return None
    side = read_sidecar(p)
    if p.stat().st_size != side.plan_bytes or (verify_bytes and sha256_file(p) != side.plan_sha256):
        log.warning("engine %s does not match its sidecar (interrupted write?); it will be rebuilt", p)
        return None
    check_compatible(side, running, plan=p, onnx_sha256=onnx_sha256, command=command)
    return side


# --- orchestration ----------------------------------------------------------------------------

BuilderFn = Callable[[Path, ModelInfo, BuildOptions], "BuiltPlan"]


@dataclass(frozen=True)
class BuiltPlan:
    """What a builder returns: the plan bytes and its I/O description (name, mode, dtype, ...)."""

    data: bytes
    io: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class EngineResult:
    plan: Path
    sidecar: Sidecar
    built: bool  # False: reused from the cache
    build_s: float = 0.0


def get_or_build(onnx_path: str | os.PathLike, options: BuildOptions, *, target: Target, builder: BuilderFn,
                 cache_dir: str | os.PathLike | None = None, output: str | os.PathLike | None = None,
                 force: bool = False, build_args: Sequence[str] = (),
                 lock_timeout_s: float | None = None) -> EngineResult:
    """Return a compatible engine for ``onnx_path``, building it (under a lock) if needed.

    ``output`` writes the plan there instead of the cache. An existing engine that matches the
    fingerprint is reused unless ``force``; an incompatible one at ``output`` is refused unless
    ``force`` (cache entries are keyed by the fingerprint, so they never mismatch by design).
    ``builder(onnx_path, info, options) -> BuiltPlan`` does the TensorRT work
    (:func:`hanrt.backends.tensorrt.build.build_plan` in production).
    """
    onnx = Path(onnx_path)
    if not onnx.is_file():
        raise InputError(f"model {str(onnx)!r} does not exist.")
    if onnx.suffix.lower() != ".onnx":
        raise UsageError(f"hanrt build takes an .onnx model, got {onnx.name!r}.")
    info = read_model_info(onnx)
    check_profiles(options.profiles, info)
    sha = sha256_file(onnx)
    fp = Fingerprint.make(target=target, onnx_sha256=sha, info=info, options=options)
    if output is not None:
        plan = Path(output)
        if plan.suffix.lower() not in ENGINE.suffixes:
            raise UsageError(f"--output must end in .plan (or .engine/.trt), got {plan.name!r}.")
    else:
        plan = engine_path(cache_dir if cache_dir is not None else default_cache_dir(), onnx, fp)
    if not force:
        hit = _matching(plan, target, fp, onnx=onnx_path, output=output)
        if hit is not None:
            log.info("engine cache hit: %s", plan)
            return EngineResult(plan, hit, built=False)
    with file_lock(_lock_path(plan), timeout_s=lock_timeout_s):
        if not force:
            hit = _matching(plan, target, fp, onnx=onnx_path, output=output)  # built by another process while we waited
            if hit is not None:
                log.info("engine built by another process meanwhile: %s", plan)
                return EngineResult(plan, hit, built=False)
        log.info("building engine %s (%s)", plan.name, "; ".join(p.describe() for p in options.profiles))
        t0 = time.perf_counter()
        built = builder(onnx, info, options)
        build_s = time.perf_counter() - t0
        side = Sidecar(
            fingerprint=fp, model_info=info, plan_bytes=len(built.data),
            plan_sha256=hashlib.sha256(built.data).hexdigest(), onnx_path=str(onnx), io=tuple(built.io),
            build={"build_s": round(build_s, 3), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "args": list(build_args)},
        )
        write_engine(plan, built.data, side)
        return EngineResult(plan, side, built=True, build_s=build_s)


def _matching(plan: Path, target: Target, fp: Fingerprint, *, onnx: str | os.PathLike,
              output: str | os.PathLike | None) -> Sidecar | None:
    """The sidecar of an engine at ``plan`` built as ``fp`` asks; ``None`` if there is none.

    An engine of an earlier hanrt that differs only in having its profiles replicated per slot
    (``hanrt build --slots N``) counts as built as asked: it runs the same. EngineMismatchError for
    another one. Its suggested rebuild uses the settings *asked for* (``fp``), not the existing
    engine's: rebuilding the old settings would only be refused again; it also names the command
    that keeps the existing engine.
    """
    out = None if output is None else str(plan)
    wanted = _build_command(fp, str(onnx), output=out)
    side = find_engine(plan, target, onnx_sha256=fp.onnx_sha256, command=wanted)
    if side is None:
        return None
    old = side.fingerprint.one_of_each()
    if old != fp:
        keep = rebuild_command(side, onnx_path=str(onnx), output=out, force=False)
        raise EngineMismatchError(
            f"{plan.name} exists but was built with other settings ({_diff(old, fp)}); "
            f"rebuild it as asked with: {wanted} (or choose another --output); "
            f"or keep the existing engine with the settings it was built with: {keep}")
    return side


def _diff(a: Fingerprint, b: Fingerprint) -> str:
    """``field: old -> new`` for each field that differs."""
    da, db = a.to_json(), b.to_json()
    return ", ".join(f"{k}: {da[k]} -> {db.get(k)}" for k in sorted(da) if da[k] != db.get(k)) or "none"
