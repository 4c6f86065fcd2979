"""hanrt.backends.tensorrt.build: the calls into ``tensorrt``, on fakes generated from the real APIs.

No machine here has TensorRT. ``trt_fakes`` (tests/trtfakes) installs a ``tensorrt`` module made from
the real TensorRT bindings' spec (classes, signatures, properties, enums) that parses the ONNX file
with ``onnx``, checks the profiles and serializes a plan bound to its version and the simulated GPU,
plus a ``cuda.bindings.runtime`` simulating two GPUs; any call the real API would refuse fails the
test. tests/conformance runs hanrt end to end on every TensorRT x cuda-bindings pair.
"""

from __future__ import annotations

import logging
import threading

import pytest

import trtfakes
from hanrt.backends import tensorrt as E
from hanrt.backends.tensorrt import build as B
from hanrt.errors import BackendError

from _trt_common import INFO, ORIN, opts


@pytest.fixture
def onnx(tmp_path):
    """A tiny hanrt graph (nearest x4, float NCHW, dynamic N/H/W)."""
    pytest.importorskip("onnx", reason="the graph and the fake TensorRT's parser need onnx ('hanrt[export]')")
    from conformance.scenario import make_onnx

    return make_onnx(tmp_path / "m.onnx", "float")


def _in_thread(fn):
    from conformance.scenario import in_thread

    return in_thread(fn, "worker")


# --- the device a build runs on (hanrt build --device N) -----------------------------------------

def test_build_plan_makes_the_device_current_first(trt_fakes, onnx):
    fx = trt_fakes()
    on1 = B.build_plan(onnx, INFO, opts((16, 16)), device=1)
    assert trtfakes.read_plan(on1.data)["gpu"] == fx.sim.properties(1)["name"]
    # None: the calling thread's current device (0 in a new thread); the fake checks that the
    # Builder is used on the device that was current when it was made
    on0 = _in_thread(lambda: B.build_plan(onnx, INFO, opts((16, 16))))
    assert trtfakes.read_plan(on0.data)["gpu"] == fx.sim.properties(0)["name"]


def test_build_plan_adds_each_profile_once(trt_fakes, onnx):
    trt_fakes()
    o = E.BuildOptions(profiles=tuple(E.profiles_from_tiles([(24, 24), (16, 16)], 4)))
    built = B.build_plan(onnx, INFO, o)
    want = [{"input": [list(p.input_shapes(INFO)[k]) for k in ("min", "opt", "max")]} for p in o.profiles]
    assert trtfakes.read_plan(built.data)["profiles"] == want


def test_a_refused_optimization_profile_is_an_error(trt_fakes, onnx):
    """add_optimization_profile returns -1 when TensorRT refuses a profile (finding 8)."""
    fx = trt_fakes()
    fx.trt._fake.api.fail["IBuilderConfig.add_optimization_profile"] = lambda *a, **k: -1
    with pytest.raises(BackendError, match=r"refused optimization profile 1x16x16"):
        B.build_plan(onnx, INFO, opts((16, 16), batch=1))


def test_build_plan_reads_io_from_the_network_and_never_deserializes(trt_fakes, onnx):
    """No engine is deserialized at build time (finding 8: twice the peak memory on an 8 GB Jetson
    while the Builder is alive); the sidecar's I/O comes from the parsed network."""
    fx = trt_fakes()
    built = B.build_plan(onnx, INFO, opts((16, 16)))
    assert fx.trt._fake.deserialized == 0 and not any(who == "Runtime" for who, _ in fx.trt._fake.loggers)
    assert built.io == ({"name": "input", "mode": "input", "dtype": "float32", "layout": "NCHW",
                         "shape": [-1, 3, -1, -1]},
                        {"name": "output", "mode": "output", "dtype": "float32", "layout": "NCHW",
                         "shape": [-1, 3, -1, -1]})


# --- one logger (finding 5) ------------------------------------------------------------------

def test_one_logger_for_every_builder_parser_and_runtime(trt_fakes, onnx):
    """TensorRT keeps one process-wide logger; every Builder, parser and Runtime gets the same one
    (the fake records a violation for a second, different logger)."""
    fx = trt_fakes()
    built = B.build_plan(onnx, INFO, opts((16, 16)))
    B.load_engine(built.data)
    _in_thread(lambda: B.load_engine(built.data))
    loggers = fx.trt._fake.loggers
    assert [who for who, _ in loggers] == ["Builder", "OnnxParser", "Runtime", "Runtime"]
    assert len({id(lg) for _, lg in loggers}) == 1 and isinstance(loggers[0][1], fx.trt.ILogger)


def test_the_logger_forwards_to_logging(trt_fakes, caplog):
    fx = trt_fakes()
    lg = B.logger()
    with caplog.at_level(logging.DEBUG, logger=B.__name__):
        lg.log(fx.trt.ILogger.ERROR, "bad thing")
        lg.log(fx.trt.ILogger.INFO, "detail")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "TensorRT: bad thing"), (logging.DEBUG, "TensorRT: detail")]


# --- network flags (finding 8) -----------------------------------------------------------------

@pytest.mark.parametrize("version,flags", [("10.3.0", 1 << 1), ("10.16.1.11", 1 << 1), ("11.4.0.106", 0)])
def test_network_flags_for_tensorrt_10_and_11(trt_fakes, version, flags):
    """10.x: STRONGLY_TYPED (value 1) must be asked for. 11.x: the flag is present but deprecated
    (value 0) and strong typing is always on, so no flag is passed."""
    fx = trt_fakes(version)
    assert B._network_flags(fx.trt) == flags
    assert fx.trt.Builder(B.logger()).create_network(flags) is not None  # the real signature takes it


# --- the timing cache (finding 6) ------------------------------------------------------------

def test_timing_cache_file_is_keyed_by_tensorrt_gpu_and_compute_capability(tmp_path):
    base = tmp_path / "timing.cache"
    assert E.timing_cache_file(base, ORIN) == tmp_path / "timing-10.3.0-Orin-sm87.cache"
    h100 = E.Target("10.7.0", "NVIDIA H100 80GB HBM3", (9, 0))
    assert E.timing_cache_file(base, h100) == tmp_path / "timing-10.7.0-NVIDIA_H100_80GB_HBM3-sm90.cache"
    assert E.timing_cache_file(tmp_path / "t", ORIN).name == "t-10.3.0-Orin-sm87"


def _keyed(fx, base):
    """The timing cache file of ``base`` for the simulated device 0, and the fake's cache key for it."""
    target = B.running_target(0)
    p = fx.sim.properties(0)
    return E.timing_cache_file(base, target), {"tensorrt": target.tensorrt, "gpu": p["name"], "cc": list(p["cc"])}


def test_timing_cache_is_loaded_strictly_and_written_to_the_keyed_file(trt_fakes, onnx, tmp_path):
    fx = trt_fakes()
    base = tmp_path / "timing.cache"
    keyed, _ = _keyed(fx, base)
    B.build_plan(onnx, INFO, opts((16, 16), timing_cache=str(base)))
    assert fx.trt._fake.configs[-1]._set_calls == [False]  # strict: never ignore_mismatch=True
    assert not base.exists() and len(trtfakes.read_timing_cache(keyed.read_bytes())["entries"]) == 1
    B.build_plan(onnx, INFO, opts((16, 16), (24, 24), timing_cache=str(base)))
    assert fx.trt._fake.configs[-1]._set_calls == [False]
    assert len(trtfakes.read_timing_cache(keyed.read_bytes())["entries"]) == 2  # the first build's kept
    assert sorted(p.name for p in tmp_path.iterdir() if "timing" in p.name) == [keyed.name, keyed.name + ".lock"]


def test_a_mismatched_timing_cache_is_replaced_with_a_warning(trt_fakes, onnx, tmp_path, caplog):
    fx = trt_fakes()
    base = tmp_path / "timing.cache"
    keyed, key = _keyed(fx, base)
    keyed.write_bytes(trtfakes.timing_cache_blob({**key, "tensorrt": "10.2.0"}, ["old"]))  # another TensorRT's
    with caplog.at_level(logging.WARNING, logger=B.__name__):
        B.build_plan(onnx, INFO, opts((16, 16), timing_cache=str(base)))
    assert fx.trt._fake.configs[-1]._set_calls == [False, False]  # the file's cache refused, then a fresh one
    assert "does not match" in caplog.text and str(keyed) in caplog.text
    got = trtfakes.read_timing_cache(keyed.read_bytes())
    assert got["key"] == key and len(got["entries"]) == 1 and "old" not in got["entries"]


def test_timing_cache_written_meanwhile_by_another_build_is_merged(trt_fakes, onnx, tmp_path):
    fx = trt_fakes()
    base = tmp_path / "timing.cache"
    keyed, key = _keyed(fx, base)
    keyed.write_bytes(trtfakes.timing_cache_blob(key, ["first"]))
    # another process finishes its build while ours runs, and writes the file
    fx.trt._fake.during_build = lambda: keyed.write_bytes(trtfakes.timing_cache_blob(key, ["first", "other"]))
    B.build_plan(onnx, INFO, opts((16, 16), timing_cache=str(base)))
    entries = trtfakes.read_timing_cache(keyed.read_bytes())["entries"]
    assert {"first", "other"} < set(entries) and len(entries) == 3


# --- the CLI --------------------------------------------------------------------------------

def test_cli_build_builds_on_the_device_asked(trt_fakes, onnx, tmp_path, capsys):
    from hanrt.cli import main

    fx = trt_fakes()
    rc = main(["build", str(onnx), "--tile", "16x16", "--device", "1", "--cache-dir", str(tmp_path / "e")])
    assert rc == 0
    plan = next((tmp_path / "e").glob("*.plan"))
    assert E.read_sidecar(plan).fingerprint.gpu == fx.sim.properties(1)["name"]
    assert trtfakes.read_plan(plan.read_bytes())["gpu"] == fx.sim.properties(1)["name"]
    out = capsys.readouterr().out
    assert "slot" not in out and "1x16x16" in out
