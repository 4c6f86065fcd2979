"""Triton backend: the tiles go to one or more Triton Inference Servers (``--backend triton --server
HOST:PORT``), through ``tritonclient`` (``pip install 'hanrt[triton]'``).

The :class:`~hanrt.upscaler.Upscaler`'s tiler runs on the client; each slot's batch of tiles is one
inference request. Servers are given as ``HOST:PORT`` or ``http://HOST:PORT`` (Triton's HTTP port)
or ``grpc://HOST:PORT`` (its gRPC port); ``HANRT_TRITON_SERVERS`` (a comma list) is used when none
are passed. The model is asked for by name (``hanrt serve`` and ``hanrt export --triton-repo`` name
it after the model file's stem: ``hanrt_x4``); its :class:`~hanrt.model_info.ModelInfo` is read from
the model configuration's ``parameters`` (key ``hanrt.model_info``), or, where a repository lacks
it, built from the model's metadata (dtype -> float NCHW or uint8 NHWC) and the scale measured
with one small request.

**Spreading and failover.** ``submit`` sends a slot's batch on a worker thread and returns at once
(the async slot protocol of :mod:`hanrt.backends.base`), so with ``slots`` >= the number of servers
every server has a batch in flight. Batches go round-robin to the servers that are up; a server
whose request fails for a transport reason (refused connection, reset, timeout, 5xx/UNAVAILABLE)
is marked down for :data:`RETRY_AFTER_S` seconds and the batch is sent to the next one; only when
every server has failed the batch does :class:`~hanrt.errors.BackendError` reach the caller,
naming each server's error. A request the server rejects as malformed (4xx/INVALID_ARGUMENT)
fails at once: another server would reject it too.

**Buffer ownership.** ``run``/``wait`` return arrays decoded from the response, owned by the
caller. One backend is used by one thread at a time (the Upscaler's lock); its worker threads each
keep their own client per server (tritonclient's clients are not shared between threads).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import BackendError, ModelError, UsageError, require
from ..model_info import ModelInfo
from .base import REMOTE, Backend, BackendSpec, OpenOptions, Probe, Slot, check_batch, installed, model_suffixes

if TYPE_CHECKING:  # pragma: no cover
    from concurrent.futures import Future

__all__ = ["TritonBackend", "TritonConfig", "parse_server", "open_triton", "model_name", "SERVERS_ENV", "RETRY_AFTER_S"]

log = logging.getLogger(__name__)

SERVERS_ENV = "HANRT_TRITON_SERVERS"
#: Seconds a server that failed a request is skipped (while another is up) before it is tried again.
RETRY_AFTER_S = 10.0
MODEL_INFO_PARAMETER = "hanrt.model_info"  # the key hanrt.triton_repo writes (not imported: tier 0 stays small)


@dataclass(frozen=True, kw_only=True)
class TritonConfig:
    """Triton client settings. ``servers``: ``HOST:PORT``, ``http://HOST:PORT`` or
    ``grpc://HOST:PORT`` (empty: ``$HANRT_TRITON_SERVERS``). ``model``: the model's name on the
    servers. ``timeout_s``: per request (connection and inference). ``workers``: requests in flight
    at once (0: two per server)."""

    servers: tuple[str, ...] = ()
    model: str = "hanrt_x4"
    version: str = ""
    timeout_s: float = 120.0
    workers: int = 0


def parse_server(text: str) -> tuple[str, str]:
    """``(protocol, "host:port")`` from ``HOST:PORT`` (HTTP), ``http://...`` or ``grpc://...``."""
    t = text.strip()
    proto = "http"
    for p in ("http", "grpc"):
        if t.lower().startswith(p + "://"):
            proto, t = p, t[len(p) + 3:]
    t = t.rstrip("/")
    host, sep, port = t.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in t:
        raise UsageError(f"--server {text!r}: expected HOST:PORT (HTTP), http://HOST:PORT or grpc://HOST:PORT.")
    return proto, t


class _Server:
    """One server: its address, protocol, thread-local clients and health."""

    def __init__(self, text: str, timeout_s: float) -> None:
        self.text = text
        self.proto, self.url = parse_server(text)
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._clients: list[Any] = []  # every thread's client, closed by close()
        self._clients_lock = threading.Lock()
        self.down_until = 0.0
        self.last_error = ""
        self.batches = 0
        self.tiles = 0

    def __str__(self) -> str:
        return f"{self.proto}://{self.url}"

    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            if self.proto == "grpc":
                mod = require("tritonclient.grpc", extra="triton", purpose="the Triton backend (gRPC)")
                c = mod.InferenceServerClient(self.url)
            else:
                mod = require("tritonclient.http", extra="triton", purpose="the Triton backend (HTTP)")
                c = mod.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                              network_timeout=self.timeout_s)
            self._local.client = c
            with self._clients_lock:
                self._clients.append(c)
        return c

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.close()
            except Exception:  # closing a dead connection: nothing left to release
                log.debug("closing a client of %s", self)

    def module(self) -> Any:
        return require(f"tritonclient.{self.proto}", extra="triton", purpose="the Triton backend")


def _transport_failure(exc: BaseException) -> bool:
    """True when another server may succeed (connection, timeout, server-side trouble); False for a
    request the server rejects as malformed."""
    get = getattr(exc, "status", None)  # tritonclient's InferenceServerException: "400" or "StatusCode.X"
    status = str(get() or "") if callable(get) else ""
    if status.startswith("4") or status in ("StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND"):
        return False
    return True


class TritonBackend(Backend):
    """Send tile batches to Triton servers (see the module docstring)."""

    name = "triton"

    def __init__(self, config: TritonConfig) -> None:
        servers = config.servers or tuple(s for s in os.environ.get(SERVERS_ENV, "").split(",") if s.strip())
        if not servers:
            raise UsageError(f"--backend triton needs at least one --server HOST:PORT (or ${SERVERS_ENV}).")
        self.config = config
        self.servers = [_Server(s, config.timeout_s) for s in dict.fromkeys(servers)]
        self._model = config.model
        self._closed = False
        self._rr = 0
        self._lock = threading.Lock()
        errors = []
        info = cfg = None
        for s in self.servers:
            try:
                got, got_cfg = self._describe(s)
            except BackendError as exc:
                errors.append(f"{s}: {exc}")
                s.down_until = time.monotonic() + RETRY_AFTER_S
                s.last_error = str(exc)
                continue
            if info is None:
                info, cfg = got, got_cfg
            elif got.to_json() != info.to_json():
                raise ModelError(f"servers disagree about model {self._model!r}: {self.servers[0]} and {s} serve "
                                 f"different models (scale, I/O or weights); serve one model under one name.")
        if info is None:
            raise BackendError(f"no Triton server serves model {self._model!r}: " + "; ".join(errors))
        for e in errors:
            log.warning("Triton server skipped for now: %s", e)
        self.info = info
        self.max_batch = int(cfg.get("max_batch_size", 0)) or None
        workers = config.workers or 2 * len(self.servers)
        #: batches the Upscaler keeps in flight: two per server, so each has one computing and one
        #: queued (the network round trip and the server's batcher hide behind the other)
        self.min_slots = workers
        from concurrent.futures import ThreadPoolExecutor  # here: `auto` loads this spec for every file

        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hanrt-triton")
        self._dtype = "UINT8" if info.io == "uint8" else "FP32"

    # -- discovery -------------------------------------------------------------------------
    def _describe(self, s: _Server) -> tuple[ModelInfo, dict]:
        """The model's ModelInfo and configuration (dict) on server ``s``; BackendError if it is not ready."""
        c = s.client()
        try:
            if not c.is_model_ready(self._model, self.config.version):
                raise BackendError(f"model {self._model!r} is not ready there (is it loaded? hanrt serve names a "
                                   f"model after its file's stem).")
            cfg = c.get_model_config(self._model, self.config.version, **({"as_json": True} if s.proto == "grpc" else {}))
        except BackendError:
            raise
        except Exception as exc:  # tritonclient's InferenceServerException, socket errors
            raise BackendError(f"cannot reach it ({_short(exc)})") from None
        cfg = cfg.get("config", cfg)
        params = cfg.get("parameters", {}) or {}
        text = (params.get(MODEL_INFO_PARAMETER) or {}).get("string_value") or (params.get(MODEL_INFO_PARAMETER) or {}).get("stringValue")
        if text:
            return ModelInfo.from_json(text, source=f"{s} model {self._model}"), cfg
        return self._probe(s, cfg), cfg

    def _probe(self, s: _Server, cfg: dict) -> ModelInfo:
        """ModelInfo of a model whose configuration carries none: layout from its input's dtype and
        dims, the scale measured with one 8x8 tile."""
        inp, out = cfg["input"][0], cfg["output"][0]
        dtype = str(inp.get("data_type", inp.get("dataType", "")))
        io = "uint8" if dtype.endswith("UINT8") else "float"
        if not (dtype.endswith("UINT8") or dtype.endswith("FP32")):
            raise ModelError(f"{s}: model {self._model!r} takes {dtype}; hanrt models take TYPE_FP32 or TYPE_UINT8.")
        info = ModelInfo(scale=1, io=io, input_name=inp["name"], output_name=out["name"])
        x = np.zeros((1, 3, 8, 8) if io == "float" else (1, 8, 8, 3), dtype=info.input_dtype)
        y = self._infer(s, x, info)
        side = y.shape[2] if io == "float" else y.shape[1]
        if side % 8:
            raise ModelError(f"{s}: model {self._model!r} turned an 8x8 tile into {y.shape}: not an upscaler.")
        log.info("%s: model %s carries no hanrt description; measured scale %d", s, self._model, side // 8)
        return info.with_(scale=side // 8)

    # -- inference -------------------------------------------------------------------------
    def _infer(self, s: _Server, batch: np.ndarray, info: ModelInfo | None = None) -> np.ndarray:
        info = info or self.info
        mod = s.module()
        dtype = "UINT8" if info.io == "uint8" else "FP32"
        inp = mod.InferInput(info.input_name, list(batch.shape), dtype)
        kw = {"binary_data": True} if s.proto == "http" else {}
        inp.set_data_from_numpy(batch, **kw)
        outputs = [mod.InferRequestedOutput(info.output_name, **kw)]
        extra = {"client_timeout": self.config.timeout_s} if s.proto == "grpc" else {}
        res = s.client().infer(self._model, [inp], model_version=self.config.version, outputs=outputs, **extra)
        y = res.as_numpy(info.output_name)
        if y is None:
            raise BackendError(f"{s}: the response carries no {info.output_name!r} tensor.")
        return y

    def _pick(self, tried: set[int]) -> int | None:
        """The next server to try: round-robin over those up and not yet tried, then those down."""
        with self._lock:
            n = len(self.servers)
            now = time.monotonic()
            order = [(self._rr + i) % n for i in range(n)]
            for want_up in (True, False):
                for i in order:
                    if i not in tried and (self.servers[i].down_until <= now) == want_up:
                        self._rr = (i + 1) % n
                        return i
        return None

    def _run_failover(self, batch: np.ndarray) -> np.ndarray:
        tried: set[int] = set()
        errors: list[str] = []
        while (i := self._pick(tried)) is not None:
            tried.add(i)
            s = self.servers[i]
            try:
                y = self._infer(s, batch)
            except BackendError:
                raise
            except Exception as exc:
                msg = _short(exc)
                if not _transport_failure(exc):
                    raise BackendError(f"Triton server {s} refused a {batch.shape} batch: {msg}") from None
                with self._lock:
                    s.down_until = time.monotonic() + RETRY_AFTER_S
                    s.last_error = msg
                errors.append(f"{s}: {msg}")
                if len(tried) < len(self.servers):
                    log.warning("Triton server %s failed (%s); retrying the batch on another server", s, msg)
                continue
            want = (batch.shape[0], *(np.array(batch.shape[1:]) * _scale_mask(self.info)))
            if tuple(y.shape) != tuple(want) or y.dtype != np.dtype(self.info.input_dtype):
                raise BackendError(f"Triton server {s} returned {y.shape} {y.dtype} for a {batch.shape} batch; "
                                   f"expected {tuple(want)} {self.info.input_dtype}.")
            with self._lock:
                s.down_until = 0.0
                s.batches += 1
                s.tiles += batch.shape[0]
            return y
        raise BackendError(f"every Triton server failed a {batch.shape[0]}-tile batch of model {self._model!r}: "
                           + "; ".join(errors) + ". Check that the servers run (hanrt serve) and are reachable.")

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise BackendError("the Triton backend was closed.")
        check_batch(self.info, batch, source=self.name)
        return self._run_failover(np.ascontiguousarray(batch))

    # -- async slots: one request in flight per slot -------------------------------------------
    def submit(self, slot: Slot, n: int) -> None:
        if self._closed:
            raise BackendError("the Triton backend was closed.")
        if slot.pending:
            raise UsageError(f"slot {slot.index} was submitted twice without wait().")
        if not 1 <= n <= slot.input.shape[0]:
            raise UsageError(f"slot {slot.index}: n must be 1..{slot.input.shape[0]}, got {n}.")
        check_batch(self.info, slot.input[:n], source=self.name)
        slot.n = n
        # the caller leaves slot.input alone until wait(slot): the worker may read it in place
        slot.handle = self._pool.submit(self._run_failover, slot.input[:n])
        slot.pending = True

    def wait(self, slot: Slot) -> np.ndarray:
        if not slot.pending:
            raise UsageError(f"slot {slot.index}: wait() without submit().")
        fut: "Future" = slot.handle
        slot.pending = False
        slot.handle = None
        slot.result = fut.result()
        return slot.result

    def release_slots(self, slots: list[Slot]) -> None:
        for s in slots:
            if s.pending and s.handle is not None:
                s.handle.cancel()
            s.handle = None
            s.result = None
            s.pending = False

    def stats(self) -> dict[str, dict[str, int]]:
        """Batches and tiles each server has answered: ``{"http://host:port": {"batches": n, "tiles": n}}``."""
        with self._lock:
            return {str(s): {"batches": s.batches, "tiles": s.tiles} for s in self.servers}

    def describe(self) -> str:
        names = ", ".join(str(s) for s in self.servers)
        return f"triton (model {self._model} on {len(self.servers)} server{'s' if len(self.servers) > 1 else ''}: {names})"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for s in self.servers:
            s.close()


def _scale_mask(info: ModelInfo) -> np.ndarray:
    return np.array([1, info.scale, info.scale] if info.layout == "NCHW" else [info.scale, info.scale, 1])


def _short(exc: BaseException) -> str:
    """One line for an error message: the first line, plus the last one of a server-side traceback
    (the exception itself; the first line only says a traceback follows)."""
    lines = [ln.strip() for ln in (str(exc).strip() or type(exc).__name__).splitlines() if ln.strip()]
    text = lines[0]
    if len(lines) > 1 and "Traceback" in text:
        text = f"{text.split('Traceback')[0].rstrip(': ')}: {lines[-1]}"
    return text[:500]


def open_triton(servers: Sequence[str], model: str, **kw: Any) -> TritonBackend:
    """A :class:`TritonBackend` for ``model`` (a name on the servers) on ``servers``."""
    return TritonBackend(TritonConfig(servers=tuple(servers), model=model, **kw))


def model_name(model: str | os.PathLike | None, default: str = "hanrt_x4") -> str:
    """The model's name on a server from ``--model``: a file's stem (``hanrt_x4.onnx`` -> ``hanrt_x4``),
    a name as is, the bundled model's name when ``None``."""
    if model is None:
        return default
    text = os.fspath(model)
    base = os.path.basename(text.rstrip("/")) or text
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in model_suffixes() else base


# --- registration (entry point triton in pyproject.toml) ---------------------------------------

def _probe() -> Probe:
    if not installed("tritonclient"):
        return Probe(False, "tritonclient is not installed (pip install 'hanrt[triton]')")
    return Probe(True, "the tiles go to Triton servers")


def _open(model: str | os.PathLike, o: OpenOptions) -> Backend:
    return open_triton(o.servers, model_name(model))


#: Never picked by ``auto`` for a file; ``auto`` with servers (``--server``) means this one.
TRITON = BackendSpec(name="triton", extra="triton", kinds=(REMOTE,), probe=_probe, open=_open, auto=False,
                     priority=100, summary="remote Triton Inference Servers (--server HOST:PORT), the model asked "
                     "for by name")


