"""``hanrt serve MODEL``: serve a model with Triton Inference Server through PyTriton (the [serve] extra).

The served model is hanrt's own backend (ONNX Runtime, TensorRT or PyTorch, picked as ``hanrt
upscale`` picks it) bound as a Python function: Triton's dynamic batcher merges the clients' tile
batches up to ``--max-batch`` tiles, and each of ``--instances`` model instances owns its own
backend. Triton answers health (``/v2/health/live``, ``/v2/health/ready``), model readiness and
Prometheus metrics (``--metrics-port``, ``/metrics``). Clients: ``hanrt upscale ... --backend triton
--server HOST:PORT`` (HTTP port; ``grpc://HOST:PORT`` for gRPC), which tile on the client.

The model's :class:`~hanrt.model_info.ModelInfo` travels in the model configuration's
``parameters`` (key ``hanrt.model_info``), as in repositories written by ``hanrt export
--triton-repo``, so clients need no copy of the model.

PyTriton's Python-backend stub loads the system's ``libpython``: run ``hanrt serve`` from a Python
whose version matches it (a virtual environment made from the system Python, e.g.
``/usr/bin/python3 -m venv``); another build of the same minor version fails at model load
(PyTriton issue #51).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from ..backends import BACKENDS
from . import Command

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  hanrt serve hanrt_x4                                   # the bundled model, HTTP 8000, gRPC 8001
  hanrt serve model.plan --http-port 9000 --grpc-port 9001 --metrics-port 9002
  hanrt upscale photos/ --output out/ --backend triton --server gpu-box:8000   # on a client
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("model", nargs="?", default="hanrt_x4",
                   help=".onnx graph, .plan engine, .pt checkpoint or a bundled model's name (default hanrt_x4)")
    p.add_argument("--name", help="model name clients ask for (default: the model file's stem)")
    p.add_argument("--backend", "-b", default="auto", choices=[b for b in BACKENDS if b != "triton"],
                   help="local backend that runs the model (default auto; as for hanrt upscale)")
    p.add_argument("--address", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)")
    p.add_argument("--http-port", type=int, default=8000, metavar="N", help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="N", help="gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, metavar="N",
                   help="Prometheus metrics port (default 8002)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="tiles per execution after dynamic batching (default 8)")
    p.add_argument("--queue-delay-us", type=int, default=1000, metavar="US",
                   help="longest wait to fill a batch, microseconds (default 1000)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="model instances, each with its own backend (default 1; 2 on a GPU overlaps copies)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads per instance (default: all)")
    p.add_argument("--device", type=int, default=0, metavar="ID", help="CUDA device (default 0)")


def make_infer(backend):
    """The function PyTriton calls with a batch of requests merged by the dynamic batcher: the
    input tensor (``B x ...``, the model's layout) through ``backend``; the output copied, since a
    backend may reuse its buffer."""
    import numpy as np

    from ..errors import HanrtError

    info = backend.info

    def infer(**inputs):
        x = inputs[info.input_name]
        try:
            y = backend.run(np.ascontiguousarray(x))
        except HanrtError as exc:  # PyTriton answers the request with the message; the server goes on
            raise ValueError(str(exc)) from exc
        return {info.output_name: np.array(y, copy=True)}

    return infer


def run(args: argparse.Namespace) -> int:
    from ..backends import open_backend
    from ..errors import BackendError, UsageError, require
    from ..triton_repo import MODEL_INFO_PARAMETER, model_name_for, resolve_model

    require("pytriton", extra="serve", purpose="hanrt serve")
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    if args.max_batch < 1 or args.instances < 1:
        raise UsageError(f"--max-batch and --instances must be >= 1, got {args.max_batch} and {args.instances}.")
    if args.queue_delay_us < 0:
        raise UsageError(f"--queue-delay-us must be >= 0, got {args.queue_delay_us}.")
    for flag, port in (("--http-port", args.http_port), ("--grpc-port", args.grpc_port),
                       ("--metrics-port", args.metrics_port)):
        _check_port(args.address, port, flag)
    path = resolve_model(args.model)
    name = args.name or model_name_for(path)
    _check_socket_path(name, args.instances)
    backends = []
    try:
        for _ in range(args.instances):
            backends.append(open_backend(path, args.backend, device_id=args.device, threads=args.threads))
        info = backends[0].info
        dtype = np.uint8 if info.io == "uint8" else np.float32
        c = info.n_colors
        shape = (c, -1, -1) if info.layout == "NCHW" else (-1, -1, c)
        config = TritonConfig(http_address=args.address, grpc_address=args.address, http_port=args.http_port,
                              grpc_port=args.grpc_port, metrics_port=args.metrics_port, allow_metrics=True,
                              exit_on_error=True)
        triton = Triton(config=config)  # bound before it starts, so the configuration can be amended
        try:
            triton.bind(
                model_name=name,
                infer_func=[batch(make_infer(be)) for be in backends],
                inputs=[Tensor(name=info.input_name, dtype=dtype, shape=shape)],
                outputs=[Tensor(name=info.output_name, dtype=dtype, shape=shape)],
                config=ModelConfig(max_batch_size=args.max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us,
                                                          preferred_batch_size=[args.max_batch])),
                strict=True,
            )
            _publish_model_info(triton, MODEL_INFO_PARAMETER, info.to_json())
            stop = threading.Event()
            handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                triton.run()  # starts tritonserver and loads the model; returns when it is ready
                _self_test(args, name, info)
                if not getattr(args, "quiet", False):
                    print(f"hanrt: serving {name!r} ({backends[0].describe()}, x{info.scale}, {info.io} I/O) on "
                          f"http {args.address}:{args.http_port}, grpc {args.address}:{args.grpc_port}, metrics "
                          f"{args.address}:{args.metrics_port}", file=sys.stderr, flush=True)
                while not stop.wait(1.0):  # Ctrl-C/SIGTERM stop it; so does Triton or an instance dying
                    if not triton.is_alive():
                        raise BackendError("Triton or a model instance stopped unexpectedly; see the log above.")
            except BackendError:
                raise
            except Exception as exc:  # PyTriton's own exception types
                raise BackendError(_serve_failure(exc)) from exc
            finally:
                for sig, h in handlers.items():
                    signal.signal(sig, h)
        finally:
            try:
                triton.stop()
            except Exception as exc:  # the error that stopped serving matters more
                log.debug("stopping Triton: %s", exc)
    finally:
        for be in backends:
            be.close()
    return 0


def _self_test(args: argparse.Namespace, name: str, info) -> None:
    """One small request through Triton's HTTP port, before saying it serves: PyTriton reports a
    model ready even when its instances cannot reach the model process (a socket it failed to make)."""
    import numpy as np
    import tritonclient.http as th

    from ..errors import BackendError

    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(args.address, args.address)
    url = f"[{host}]:{args.http_port}" if ":" in host else f"{host}:{args.http_port}"
    m = -(-max(8, info.min_tile) // info.tile_multiple) * info.tile_multiple
    shape = (1, info.n_colors, m, m) if info.layout == "NCHW" else (1, m, m, info.n_colors)
    x = np.zeros(shape, dtype=info.input_dtype)
    client = th.InferenceServerClient(url, network_timeout=300.0)
    try:
        inp = th.InferInput(info.input_name, list(shape), "UINT8" if info.io == "uint8" else "FP32")
        inp.set_data_from_numpy(x)
        y = client.infer(name, [inp]).as_numpy(info.output_name)
    except Exception as exc:  # tritonclient's InferenceServerException, socket errors
        raise BackendError(f"model {name!r} loaded but failed a self-test request through Triton: {exc}") from None
    finally:
        client.close()
    want = (1, info.n_colors, m * info.scale, m * info.scale) if info.layout == "NCHW" else (1, m * info.scale, m * info.scale, info.n_colors)
    if y is None or tuple(y.shape) != want:
        raise BackendError(f"model {name!r} answered a self-test request with {None if y is None else y.shape}, "
                           f"expected {want}.")


def _check_socket_path(name: str, instances: int) -> None:
    """UsageError when PyTriton's IPC socket path for this model would pass the 107-byte limit of a
    Unix socket address: the model would load and report ready, then fail every request."""
    from pytriton.constants import PYTRITON_HOME

    from ..errors import UsageError

    sock = PYTRITON_HOME / "workspace_xxxxxxxx" / f"{name}_{instances - 1}_0-server.sock"
    if len(os.fsencode(sock)) > 107:
        raise UsageError(
            f"PyTriton's socket {str(sock)!r} would be longer than a Unix socket path may be (107 bytes): "
            f"use a shorter --name, or point PYTRITON_HOME at a shorter folder (it is {str(PYTRITON_HOME)!r}).")


def _check_port(address: str, port: int, flag: str) -> None:
    """UsageError when ``address:port`` cannot be bound (taken by another server, or invalid)."""
    import socket

    from ..errors import UsageError

    if not 0 < port < 65536:
        raise UsageError(f"{flag} must be 1..65535, got {port}.")
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            raise UsageError(f"{flag} {port}: cannot listen on {address}:{port} ({exc.strerror or exc}); "
                             f"another server may be using it: pick another port.") from None


def _publish_model_info(triton, key: str, value: str) -> None:
    """Put the ModelInfo JSON into the generated model configuration's ``parameters``. PyTriton has
    no public field for it, so this sets the backend parameters of the configuration it caches
    (PyTriton 0.7); where that fails, clients fall back to probing the scale."""
    try:
        for model in triton._model_manager.models:  # noqa: SLF001 - see the docstring
            model._get_triton_model_config().backend_parameters[key] = value  # noqa: SLF001
    except AttributeError as exc:  # another PyTriton version
        log.warning("cannot publish the model description in the model configuration (%s); clients will "
                    "probe the scale with a small request", exc)


def _serve_failure(exc: BaseException) -> str:
    text = f"Triton failed: {exc}"
    if "_recursion_count" in str(exc) or sys.base_prefix not in ("/usr", "/usr/local"):
        text += (" (PyTriton's Python-backend stub loads the system's libpython: run hanrt serve from a "
                 "virtual environment made from the system Python, e.g. /usr/bin/python3 -m venv; PyTriton issue #51)")
    return text


COMMAND = Command("serve", "serve a model with Triton Inference Server (PyTriton): HTTP/gRPC, dynamic batching",
                  configure, run, order=35, description=__doc__.split("\n\n")[0])
