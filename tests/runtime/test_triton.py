"""Triton: ``hanrt export --triton-repo`` (parsed with Triton's own schema), ``hanrt serve`` (a real
PyTriton/Triton server in a subprocess, see ``_triton_server.py``) and ``--backend triton``.

The server tests share two servers of the tiny model (started once, restarted if a test killed
one); the failure tests kill them with SIGKILL mid-run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from hanrt.cli import main
from hanrt.model_info import read_model_info
from hanrt.upscaler import Upscaler, default_model_path
from hanrt_testkit import IMPORT_BLOCKER

try:  # the dev extra installs both; in CI a missing one is a failure, not a skip
    import onnxruntime  # noqa: F401
    import tritonclient.http  # noqa: F401
except ImportError as exc:
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(f"needs the triton and cpu extras ({exc})", allow_module_level=True)
from google.protobuf import text_format  # noqa: E402  (tritonclient's dependency)
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402

from _triton_server import ROOT, Server, server_python  # noqa: E402

TILE, MARGIN, BATCH = 24, 4, 4


def _parse(folder: Path) -> pb.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())


# --- the repository ------------------------------------------------------------------------------

def test_repo_for_the_bundled_model_checks_every_field(tmp_path):
    assert main(["-q", "export", "--triton-repo", str(tmp_path / "repo")]) == 0  # --model defaults to hanrt_x4
    folder = tmp_path / "repo" / "hanrt_x4"
    src = default_model_path()
    info = read_model_info(src)
    assert (folder / "1" / "model.onnx").read_bytes() == src.read_bytes()
    c = _parse(folder)
    assert (c.name, c.backend, c.default_model_filename, c.max_batch_size) == ("hanrt_x4", "onnxruntime", "model.onnx", 8)
    assert c.platform == "" and not c.model_warmup
    (i,), (o,) = c.input, c.output
    assert (i.name, i.data_type, list(i.dims)) == (info.input_name, pb.TYPE_FP32, [3, -1, -1])
    assert (o.name, o.data_type, list(o.dims)) == (info.output_name, pb.TYPE_FP32, [3, -1, -1])
    assert list(c.dynamic_batching.preferred_batch_size) == [8]
    assert c.dynamic_batching.max_queue_delay_microseconds == 1000
    (g,) = c.instance_group
    assert (g.count, g.kind, list(g.gpus)) == (2, pb.ModelInstanceGroup.KIND_GPU, [])
    (acc,) = c.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt"
    assert dict(acc.parameters) == {"precision_mode": "FP32", "max_workspace_size_bytes": str(1 << 30)}
    assert not c.optimization.execution_accelerators.cpu_execution_accelerator
    assert list(c.parameters) == ["hanrt.model_info"]
    assert json.loads(c.parameters["hanrt.model_info"].string_value) == json.loads(info.to_json())
    # the same model twice is refused without --overwrite, and nothing is touched
    before = (folder / "config.pbtxt").read_bytes()
    assert main(["-q", "export", "--triton-repo", str(tmp_path / "repo"), "--model", "hanrt_x4.onnx"]) == 4
    assert (folder / "config.pbtxt").read_bytes() == before


def test_repo_uint8_graph_on_cpu_instances(tmp_path, tiny_onnx_uint8):
    info = read_model_info(tiny_onnx_uint8)
    assert main(["-q", "export", "--triton-repo", str(tmp_path), "--model", str(tiny_onnx_uint8), "--name", "tiny_u8",
                 "--kind", "cpu", "--instances", "3", "--max-batch", "4", "--queue-delay-us", "250"]) == 0
    c = _parse(tmp_path / "tiny_u8")
    assert (c.name, c.backend, c.max_batch_size) == ("tiny_u8", "onnxruntime", 4)
    for t, name in ((c.input[0], info.input_name), (c.output[0], info.output_name)):
        assert (t.name, t.data_type, list(t.dims)) == (name, pb.TYPE_UINT8, [-1, -1, 3])  # uint8 NHWC
    assert (list(c.dynamic_batching.preferred_batch_size), c.dynamic_batching.max_queue_delay_microseconds) == ([4], 250)
    (g,) = c.instance_group
    assert (g.count, g.kind, list(g.gpus)) == (3, pb.ModelInstanceGroup.KIND_CPU, [])
    assert not c.HasField("optimization")  # no GPU accelerator for CPU instances
    assert json.loads(c.parameters["hanrt.model_info"].string_value)["io"] == "uint8"


def test_repo_gpu_list_and_accelerator_rules(tmp_path):
    assert main(["-q", "export", "--triton-repo", str(tmp_path), "--model", "hanrt_x4_int8", "--gpus", "0,2",
                 "--instances", "1"]) == 0
    c = _parse(tmp_path / "hanrt_x4_int8")
    (g,) = c.instance_group
    assert (g.count, g.kind, list(g.gpus)) == (1, pb.ModelInstanceGroup.KIND_GPU, [0, 2])
    assert not c.HasField("optimization")  # INT8 Q/DQ graphs: no TensorRT accelerator (module docstring)
    assert main(["-q", "export", "--triton-repo", str(tmp_path), "--model", "hanrt_x4_fp16", "--no-trt-accelerator"]) == 0
    assert not _parse(tmp_path / "hanrt_x4_fp16").HasField("optimization")
    assert main(["-q", "export", "--triton-repo", str(tmp_path), "--model", "no_such_model"]) == 3
    assert main(["-q", "export", "--triton-repo", str(tmp_path), "--model", "hanrt_x4", "--gpus", "a"]) == 2


def test_repo_for_a_tensorrt_plan(tmp_path, tiny_onnx):
    """A plan's repository: backend tensorrt, model.plan, max batch from the sidecar's profiles."""
    from hanrt.backends.tensorrt import BuildOptions, Fingerprint, Profile, Sidecar, Target, sidecar_path

    info = read_model_info(tiny_onnx)
    profiles = (Profile((1, 16, 16), (4, 32, 32), (6, 64, 64)), Profile((1, 16, 16), (2, 32, 32), (4, 32, 32)))
    opts = BuildOptions(profiles=profiles)
    fp = Fingerprint.make(target=Target(tensorrt="10.3.0", gpu="Orin", compute_capability=(8, 7)),
                          onnx_sha256="0" * 64, info=info, options=opts)
    plan = tmp_path / "tiny.plan"
    plan.write_bytes(b"not a real engine: the repository copies it as it is")
    sidecar_path(plan).write_text(Sidecar(fingerprint=fp, model_info=info, plan_bytes=plan.stat().st_size,
                                          plan_sha256="", onnx_path=str(tiny_onnx)).to_json())
    repo = tmp_path / "repo"
    assert main(["-q", "export", "--triton-repo", str(repo), "--model", str(plan)]) == 0
    c = _parse(repo / "tiny")
    assert (c.backend, c.default_model_filename, c.max_batch_size) == ("tensorrt", "model.plan", 4)
    assert (repo / "tiny" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert not c.HasField("optimization") and c.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert main(["-q", "export", "--triton-repo", str(repo), "--model", str(plan), "--kind", "cpu", "--overwrite"]) == 2
    assert main(["-q", "export", "--triton-repo", str(repo), "--model", str(plan), "--max-batch", "5", "--overwrite"]) == 2


def test_repo_needs_no_torch(tmp_path):
    """A runtime-only install (no host-side packages) writes repositories with hanrt triton-repo: torch,
    onnx and tritonclient blocked; hanrt export, registered by the export package, is not there."""
    code = IMPORT_BLOCKER + "from hanrt.cli import main\nraise SystemExit(main(sys.argv[2:]))\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "runtime"))
    r = subprocess.run([sys.executable, "-c", code, json.dumps(["torch", "onnx", "onnxslim", "tritonclient", "pytriton"]),
                        "-q", "triton-repo", str(tmp_path)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    # the host-side packages blocked too: an editable install would find them beside the runtime
    r = subprocess.run([sys.executable, "-c", code, json.dumps(["hanrt_export", "hanrt_bench"]), "export", "--help"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 5 and "hanrt export is registered" in r.stderr and "cannot be imported" in r.stderr, r.stderr
    assert _parse(tmp_path / "hanrt_x4").name == "hanrt_x4"


def test_triton_options_without_a_server(monkeypatch, tmp_path, capsys):
    from hanrt.backends.triton import SERVERS_ENV, model_name, parse_server
    from hanrt.errors import UsageError

    monkeypatch.delenv(SERVERS_ENV, raising=False)
    with pytest.raises(UsageError, match="needs at least one --server"):
        Upscaler("tiny", backend="triton")
    with pytest.raises(UsageError, match="goes with --backend triton"):
        Upscaler("tiny", backend="ort-cpu", servers=["h:1"])
    (src,) = _write_inputs(tmp_path / "in", _images(1, seed=0))
    assert main(["-q", "upscale", str(src), "-o", str(tmp_path / "y.png"), "--server", "nohost"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err and not (tmp_path / "y.png").exists()
    assert parse_server("grpc://h:8001") == ("grpc", "h:8001") and parse_server("h:8000/") == ("http", "h:8000")
    for bad in ("h", "h:0", "http://h:x", "h:1/v2"):
        with pytest.raises(UsageError):
            parse_server(bad)
    assert [model_name(m) for m in (None, "a/b/hanrt_x4.onnx", "m.plan", "tiny", "v1.2")] == \
        ["hanrt_x4", "hanrt_x4", "m", "tiny", "v1.2"]


# --- a real server -----------------------------------------------------------------------------

class Pool:
    """``hanrt serve`` processes started on demand (again after a kill): 0 and 1 serve the tiny
    float model as ``tiny``, 2 its uint8 twin as ``tiny_u8``."""

    def __init__(self, python: Path, models: list[tuple[Path, str]], log_dir: Path) -> None:
        self.python, self.models, self.log_dir = python, models, log_dir
        self.servers: list[Server | None] = [None] * len(models)

    def get(self, *idx: int) -> list[Server]:
        started = []
        for i in idx:
            s = self.servers[i]
            if s is None or s.proc.poll() is not None:
                model, name = self.models[i]
                self.servers[i] = s = Server(self.python, model, name=name, log_dir=self.log_dir)
                started.append(s)
        for s in started:
            s.wait_ready()
        return [self.servers[i] for i in idx]

    def close(self) -> None:
        for s in self.servers:
            if s is not None:
                s.stop()


@pytest.fixture(scope="module")
def pool(tiny_onnx, tiny_onnx_uint8, tmp_path_factory):
    p = Pool(server_python(), [(tiny_onnx, "tiny"), (tiny_onnx, "tiny"), (tiny_onnx_uint8, "tiny_u8")],
             tmp_path_factory.mktemp("triton-logs"))
    try:
        yield p
    finally:
        p.close()


def _images(n: int, seed: int, size: tuple[int, int] = (40, 52)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def _local(tiny_onnx, images):
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=TILE, margin=MARGIN, batch=BATCH, threads=1) as up:
        return [up.upscale(im) for im in images]


def _metric(server: Server, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and 'model="tiny"' in line)


def test_serve_matches_the_local_backend(pool, tiny_onnx):
    (a,) = pool.get(0)
    for probe in ("live", "ready"):
        with urllib.request.urlopen(f"http://{a.url}/v2/health/{probe}", timeout=10) as r:
            assert r.status == 200
    images = _images(2, seed=1)
    want = _local(tiny_onnx, images)
    for server in (a.url, f"grpc://127.0.0.1:{a.grpc}"):
        with Upscaler("tiny", servers=[server], tile=TILE, margin=MARGIN, batch=BATCH) as up:
            assert up.backend.name == "triton" and up.scale == 4
            assert up.info == read_model_info(tiny_onnx)  # the description travelled in the model config
            for im, w in zip(images, want):
                np.testing.assert_array_equal(up.upscale(im), w)
    # the raw float batch, too (ONNX Runtime of the same version on both sides)
    from hanrt.backends.onnxrt import OnnxRuntimeBackend
    from hanrt.backends.triton import open_triton

    x = np.random.default_rng(2).uniform(0, 255, (3, 3, 20, 28)).astype(np.float32)
    with OnnxRuntimeBackend(tiny_onnx) as loc, open_triton([a.url], "tiny") as rem:
        np.testing.assert_array_equal(rem.run(x), loc.run(x))
    assert _metric(a, "nv_inference_request_success") > 0  # Prometheus metrics
    # a repository without hanrt's description: the layout from the config, the scale measured
    with open_triton([a.url], "tiny") as rem:
        s = rem.servers[0]
        cfg = s.client().get_model_config("tiny")
        cfg.pop("parameters")
        got = rem._probe(s, cfg)
    info = read_model_info(tiny_onnx)
    assert (got.scale, got.io, got.input_name, got.output_name) == (info.scale, "float", info.input_name, info.output_name)


def test_uint8_nhwc_model_served(pool, tiny_onnx_uint8):
    (u,) = pool.get(2)
    images = _images(2, seed=7)
    with Upscaler(tiny_onnx_uint8, backend="ort-cpu", tile=TILE, margin=MARGIN, batch=BATCH, threads=1) as up:
        want = [up.upscale(im) for im in images]
    with Upscaler("tiny_u8", servers=[f"grpc://127.0.0.1:{u.grpc}"], tile=TILE, margin=MARGIN, batch=BATCH) as up:
        assert (up.info.io, up.info.layout) == ("uint8", "NHWC")
        for im, w in zip(images, want):
            np.testing.assert_array_equal(up.upscale(im), w)
    u.stop()


def test_open_errors_and_an_unreachable_server(pool, caplog):
    from hanrt.backends.triton import open_triton
    from hanrt.errors import BackendError

    caplog.set_level(logging.WARNING, logger="hanrt")  # an earlier main(["-q", ...]) may have raised it
    (a,) = pool.get(0)
    with pytest.raises(BackendError, match="no Triton server serves model 'nope'.*not ready"):
        open_triton([a.url], "nope")
    dead = "127.0.0.1:1"  # nothing listens on port 1
    with pytest.raises(BackendError, match="cannot reach it"):
        open_triton([dead], "tiny")
    with open_triton([dead, a.url], "tiny") as rem:  # one of two down: a warning, and the work goes on
        x = np.zeros((2, 3, 16, 16), np.float32)
        assert rem.run(x).shape == (2, 3, 64, 64)
        assert rem.stats() == {f"http://{dead}": {"batches": 0, "tiles": 0}, f"http://{a.url}": {"batches": 1, "tiles": 2}}
    assert "Triton server skipped for now" in caplog.text


def test_four_client_threads_many_images(pool, tiny_onnx):
    servers = pool.get(0, 1)
    images = _images(32, seed=3, size=(36, 44))
    want = _local(tiny_onnx, images)

    def work(k: int) -> list[tuple[int, bool]]:
        out = []
        with Upscaler("tiny", servers=[s.url for s in servers], tile=TILE, margin=MARGIN, batch=BATCH) as up:
            for j in range(k, len(images), 4):
                out.append((j, np.array_equal(up.upscale(images[j]), want[j])))
        return out

    with ThreadPoolExecutor(4) as ex:
        results = [r for f in [ex.submit(work, k) for k in range(4)] for r in f.result()]
    assert sorted(j for j, _ in results) == list(range(len(images)))
    assert all(ok for _, ok in results), [j for j, ok in results if not ok]


def _write_inputs(folder: Path, images) -> list[Path]:
    from hanrt.io.images import write_image

    folder.mkdir()
    paths = []
    for k, im in enumerate(images):
        paths.append(folder / f"im{k:03d}.png")
        write_image(paths[-1], im)
    return paths


def test_cli_upscale_and_stream_remotely(pool, tiny_onnx, tmp_path, capsys):
    (a,) = pool.get(0)
    ins = _write_inputs(tmp_path / "in", _images(3, seed=4))
    common = ["--tile", str(TILE), "--margin", str(MARGIN), "--batch", str(BATCH)]
    assert main(["-q", "upscale", str(tmp_path / "in"), "-o", str(tmp_path / "remote"), "-m", "tiny",
                 "--server", a.url, *common]) == 0
    assert main(["-q", "upscale", str(tmp_path / "in"), "-o", str(tmp_path / "local"), "-m", str(tiny_onnx),
                 "-b", "ort-cpu", *common]) == 0
    from hanrt.io.images import read_image

    for p in ins:
        np.testing.assert_array_equal(read_image(tmp_path / "remote" / p.name).pixels,
                                      read_image(tmp_path / "local" / p.name).pixels)
    assert main(["-q", "stream", str(tmp_path / "in"), "-o", str(tmp_path / "frames"), "-m", "tiny", "--server",
                 f"grpc://127.0.0.1:{a.grpc}", "--no-progress", *common]) == 0
    frames = sorted((tmp_path / "frames").iterdir())
    assert len(frames) == len(ins)
    for f, p in zip(frames, ins):
        np.testing.assert_array_equal(read_image(f).pixels, read_image(tmp_path / "local" / p.name).pixels)


def test_triton_bench_rows(pool, tiny_onnx, tmp_path, capsys):
    import shutil

    from hanrt_bench.triton_bench import main as bench

    a, b = pool.get(0, 1)
    model = tmp_path / "tiny.onnx"  # the stem names the model on the servers
    shutil.copyfile(tiny_onnx, model)
    assert bench(["--model", str(model), "--server", a.url, "--server", b.url, "--size", "32x40", "--tile", "24",
                  "--margin", "4", "--images", "2", "--rounds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["row"]: r for r in out["rows"]}
    assert list(rows) == ["local", "triton x1", "triton x2", "round trip local", "round trip triton"]
    assert rows["triton x1"]["equal_to_local"] and rows["triton x2"]["equal_to_local"]
    assert len(rows["triton x2"]["batches_per_server"]) == 2 and min(rows["triton x2"]["batches_per_server"]) > 0
    assert all(r["seconds"] > 0 and r["tiles_per_s"] > 0 for r in out["rows"])


def _run_cli_in_thread(argv: list[str]) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def go():
        box["rc"] = main(argv)

    t = threading.Thread(target=go)
    t.start()
    return t, box


def _wait_for_files(folder: Path, n: int, t: threading.Thread, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and t.is_alive():
        if folder.is_dir() and len([p for p in folder.iterdir() if p.suffix == ".png"]) >= n:
            return
        time.sleep(0.02)


def test_two_servers_spread_then_one_killed_run_completes(pool, tiny_onnx, tmp_path, capsys):
    a, b = pool.get(0, 1)
    before = [_metric(s, "nv_inference_exec_count") for s in (a, b)]
    images = _images(32, seed=5, size=(48, 64))
    ins = _write_inputs(tmp_path / "in", images)
    want = _local(tiny_onnx, images)
    out = tmp_path / "out"
    t, box = _run_cli_in_thread(["-q", "upscale", str(tmp_path / "in"), "-o", str(out), "-m", "tiny",
                                 "--server", a.url, "--server", b.url, "--tile", str(TILE), "--margin", str(MARGIN),
                                 "--batch", str(BATCH)])
    _wait_for_files(out, 4, t)
    assert t.is_alive(), "the run ended before the server could be killed: give it more work"
    spread = [_metric(s, "nv_inference_exec_count") - v for s, v in zip((a, b), before)]
    b.kill()
    t.join(timeout=300)
    assert box.get("rc") == 0, capsys.readouterr().err
    assert all(n > 0 for n in spread), f"batches per server before the kill: {spread}"
    from hanrt.io.images import read_image

    for p, w in zip(ins, want):
        np.testing.assert_array_equal(read_image(out / p.name).pixels, w)
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in ins]


def test_server_killed_mid_run_fails_clearly_and_leaves_no_partial_file(pool, tiny_onnx, tmp_path, capsys):
    (a,) = pool.get(0)
    images = _images(40, seed=6, size=(48, 64))
    ins = _write_inputs(tmp_path / "in", images)
    want = dict(zip((p.name for p in ins), _local(tiny_onnx, images)))
    out = tmp_path / "out"
    t, box = _run_cli_in_thread(["upscale", str(tmp_path / "in"), "-o", str(out), "-m", "tiny", "--server", a.url,
                                 "--tile", str(TILE), "--margin", str(MARGIN), "--batch", str(BATCH)])
    _wait_for_files(out, 3, t)
    assert t.is_alive(), "the run ended before the server could be killed: give it more work"
    a.kill()
    t.join(timeout=300)
    err = capsys.readouterr().err
    assert box.get("rc") == 8, err  # BackendError
    assert "every Triton server failed" in err and a.url in err
    from hanrt.io.images import read_image

    done = sorted(out.iterdir())
    assert 3 <= len(done) < len(ins), [p.name for p in done]
    for p in done:  # only finished files, each complete and right; no temporary leftovers
        assert p.name in want, p.name
        np.testing.assert_array_equal(read_image(p).pixels, want[p.name])
    assert f"{len(done)} upscaled, {len(ins) - len(done)} failed" in err


def test_sigterm_stops_the_server_and_its_children(pool):
    """SIGTERM (systemd, docker stop, Kubernetes) stops Triton cleanly: exit 0, no process left."""
    import signal

    from _triton_server import _group_alive

    (b,) = pool.get(1)
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=60) == 0, b.tail()
    deadline = time.monotonic() + 30
    while _group_alive(b.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(b.proc.pid), "tritonserver or its stub outlived hanrt serve"


def test_serve_refuses_a_taken_port_and_a_too_long_socket_path(tmp_path):
    import socket

    from _triton_server import free_port

    py = server_python()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "runtime"))
    env.pop("VIRTUAL_ENV", None)
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([str(py), "-m", "hanrt", "serve", "hanrt_x4", "--address", "127.0.0.1", *ports,
                            "--http-port", str(port)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and f"--http-port {port}: cannot listen" in r.stderr, r.stderr
    env["PYTRITON_HOME"] = str(tmp_path / ("long" * 20))
    r = subprocess.run([str(py), "-m", "hanrt", "serve", "hanrt_x4", "--address", "127.0.0.1", *ports],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "longer than a Unix socket path may be" in r.stderr, r.stderr
