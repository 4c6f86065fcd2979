"""A fake ``tensorrt`` module made from a real version's spec, functional enough to drive hanrt.

Classes, members, signatures and enums are the real version's (see :mod:`trtfakes.spec`); the
behaviour is simulated: the ONNX parser reads the graph with ``onnx`` (inputs, outputs, dtypes,
dynamic dims), the builder checks the optimization profiles and serializes a plan (the graph and
the profiles, bound to this TensorRT version and the current device's GPU), the runtime refuses a
plan of another version or GPU, and an execution context runs the graph with ONNX Runtime on the
simulated device memory at the addresses set (range-checked by :class:`trtfakes.cuda.CudaSim`).
"""

from __future__ import annotations

import json
import threading
import types
import weakref
from typing import Any

import numpy as np

from .spec import LOG, Api, Log, _direct_access

__all__ = ["make_trt"]

PLAN_MAGIC = b"HANRT-FAKE-TRT-PLAN\n"
CACHE_MAGIC = b"HANRT-FAKE-TRT-TIMING\n"

_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL"}


def _parser_refusals(m: Any) -> list[str]:
    """What TensorRT's ONNX parser refuses that hanrt's graphs could contain (the fake parses
    everything else): UINT8 anywhere but a network input/output going straight through a Cast
    (onnx-tensorrt's operator table; NVIDIA in TensorRT issue #3985), DequantizeLinear on data other
    than INT8/FP8/INT4 (onnxruntime #14229, onnx-tensorrt #850)."""
    import onnx
    from onnx import TensorProto as TP

    inferred = onnx.shape_inference.infer_shapes(m)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    ins, outs = {v.name for v in g.input}, {v.name for v in g.output}
    dq_ok = {TP.INT8, TP.FLOAT8E4M3FN, getattr(TP, "INT4", TP.INT8)}
    errs = []
    for node in g.node:
        where = f"node {node.name or node.op_type} ({node.op_type})"
        for t in node.input:
            if t and types.get(t) == TP.UINT8 and not (t in ins and node.op_type == "Cast"):
                errs.append(f"{where}: UINT8 tensor {t!r} is only supported as a network input feeding a Cast")
        for t in node.output:
            if t and types.get(t) == TP.UINT8 and not (t in outs and node.op_type == "Cast"):
                errs.append(f"{where}: UINT8 tensor {t!r} is only supported as a network output made by a Cast")
        if node.op_type == "DequantizeLinear" and types.get(node.input[0]) not in dq_ok:
            errs.append(f"{where}: only activation types allowed as input to this layer "
                        f"({node.input[0]!r} is {TP.DataType.Name(types.get(node.input[0], 0))})")
    return errs


class FakeTrt:
    """State shared by the classes of one fake module: the api, the CUDA simulator, counters."""

    def __init__(self, api: Api, sim: Any) -> None:
        self.api = api
        self.sim = sim
        self.builds = 0
        self.loggers: list[tuple[str, Any]] = []  # (who, logger) for every Builder, OnnxParser, Runtime
        self.configs: list[Any] = []  # every IBuilderConfig made
        self.deserialized = 0
        self.during_build = lambda: None  # a test's hook: runs inside build_serialized_network
        self.lock = threading.Lock()
        self.contexts: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.builders: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.logger: Any = None

    def register_logger(self, logger: Any, who: str) -> None:
        """TensorRT keeps one process-wide logger: the first one given; a different one later is
        ignored with "The logger passed into createInferRuntime differs from one already provided"
        (TensorRT #1475) while its Python object may die with its Builder/Runtime."""
        self.loggers.append((who.split("(")[0], logger))
        if self.logger is None:
            self.logger = logger
        elif logger is not self.logger:
            self.api.log.violation(f"{who}: a different ILogger than the one TensorRT already holds process-wide "
                                   f"(one logger per process, as NVIDIA's samples do)")

    def enum(self, q: str, name: str) -> Any:
        return getattr(self.api.enums[q], name)

    def error(self, logger: Any, msg: str) -> None:
        try:
            logger.log(self.enum("ILogger.Severity", "ERROR"), msg)
        except Exception:  # noqa: BLE001 - a logger's own failure is not TensorRT's
            pass


def make_trt(spec: dict, sim: Any, *, log: Log = LOG) -> types.ModuleType:
    """The fake ``tensorrt`` module for ``spec`` (from ``fetch.spec``), simulating on ``sim``."""
    label = f"TensorRT {spec['version']}"
    api = Api(spec, label, log)
    ft = FakeTrt(api, sim)
    E = api.enums

    def dtype(name: str) -> Any:
        return getattr(E["DataType"], name)

    class ILogger:
        _fake_impl = True

    class Logger:
        _fake_impl = True

        def __init__(self, min_severity=None) -> None:
            object.__setattr__(self, "min_severity", min_severity)

        def log(self, severity, msg) -> None:
            pass

    class IProgressMonitor:
        _fake_impl = True

    class ITensor:
        _fake_impl = True

        def _setup(self, name: str, dtype, shape) -> None:
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "dtype", dtype)
            object.__setattr__(self, "shape", tuple(shape))

    class INetworkDefinition:
        _fake_impl = True

        def _setup(self, flags: int) -> None:
            self._flags = int(flags)
            self._inputs: list = []
            self._outputs: list = []
            self._onnx: bytes = b""

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_input(self, index):
            if not 0 <= index < len(self._inputs):
                return None
            return self._inputs[index]

        def get_output(self, index):
            if not 0 <= index < len(self._outputs):
                return None
            return self._outputs[index]

    class OnnxParser:
        _fake_impl = True

        def __init__(self, network, logger) -> None:
            ft.register_logger(logger, "OnnxParser(network, logger)")
            self._network = network
            self._logger = logger
            self._errors: list[str] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

        def parse_from_file(self, model):
            import onnx

            try:
                m = onnx.load(str(model))
            except Exception as exc:  # noqa: BLE001
                self._errors.append(f"cannot read {model}: {exc}")
                return False
            for err in _parser_refusals(m):
                self._errors.append(err)
            if self._errors:
                return False
            net = self._network
            inits = {i.name for i in m.graph.initializer}
            for vi, dest in [(v, net._inputs) for v in m.graph.input if v.name not in inits] + \
                            [(v, net._outputs) for v in m.graph.output]:
                tt = vi.type.tensor_type
                if tt.elem_type not in _ONNX_TO_TRT:
                    self._errors.append(f"{vi.name}: unsupported data type {tt.elem_type}")
                    return False
                shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
                dest.append(api.new("ITensor", name=vi.name, dtype=dtype(_ONNX_TO_TRT[tt.elem_type]), shape=shape))
            net._onnx = m.SerializeToString()
            return True

    class IOptimizationProfile:
        _fake_impl = True

        def _setup(self) -> None:
            self._shapes: dict[str, tuple] = {}
            self._valid = True

        def set_shape(self, input, min, opt, max):
            lo, op, hi = (tuple(int(v) for v in x) for x in (min, opt, max))
            if not (len(lo) == len(op) == len(hi)) or any(not a <= b <= c for a, b, c in zip(lo, op, hi)) \
                    or any(v < 0 for v in lo):
                self._valid = False
            self._shapes[str(input)] = (lo, op, hi)

        def get_shape(self, input):
            return [list(s) for s in self._shapes[str(input)]]

    class ITimingCache:
        _fake_impl = True

        def _setup(self, key: dict, entries=()) -> None:
            self._key = key
            self._entries = set(entries)  # one "tactic" per profile shape timed

        def serialize(self):
            return api.new("IHostMemory", CACHE_MAGIC + json.dumps({"key": self._key,
                                                                    "entries": sorted(self._entries)}).encode())

        def combine(self, input_cache, ignore_mismatch):
            if input_cache._key != self._key and not ignore_mismatch:
                return False
            self._entries |= input_cache._entries
            return True

    class IHostMemory(bytes):
        _fake_impl = True

        @property
        def nbytes(self) -> int:
            return len(self)

    def _cache_key() -> dict:
        props = sim.properties(sim.current_device())
        return {"tensorrt": spec["version"], "gpu": props["name"], "cc": list(props["cc"])}

    class IBuilderConfig:
        _fake_impl = True

        def _setup(self) -> None:
            self._profiles: list = []
            self._pools: dict = {}
            self._cache = None
            self._set_calls: list = []  # ignore_mismatch of each set_timing_cache call
            ft.configs.append(self)
            object.__setattr__(self, "builder_optimization_level", 3)
            object.__setattr__(self, "progress_monitor", None)

        def set_memory_pool_limit(self, pool, pool_size):
            self._pools[pool.name] = int(pool_size)

        def add_optimization_profile(self, profile):
            if not profile._valid:
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._profiles)

        def create_timing_cache(self, serialized_timing_cache):
            blob = bytes(memoryview(serialized_timing_cache))
            if not blob:
                return api.new("ITimingCache", key=_cache_key())
            if not blob.startswith(CACHE_MAGIC):
                return None
            d = json.loads(blob[len(CACHE_MAGIC):])
            return api.new("ITimingCache", key=d["key"], entries=d["entries"])

        def set_timing_cache(self, cache, ignore_mismatch):
            self._set_calls.append(bool(ignore_mismatch))
            if cache._key != _cache_key():
                if not ignore_mismatch:
                    return False
                api.log.violation(f"IBuilderConfig.set_timing_cache: a timing cache of {cache._key} used for "
                                  f"{_cache_key()} with ignore_mismatch=True (timings of another GPU/TensorRT)")
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    class Builder:
        _fake_impl = True

        def __init__(self, logger) -> None:
            self._logger = logger
            self._device = sim.current_device()
            ft.register_logger(logger, "Builder(logger)")
            ft.builders.add(self)

        def create_network(self, flags=0):
            return api.new("INetworkDefinition", flags=int(flags))

        def create_builder_config(self):
            return api.new("IBuilderConfig")

        def create_optimization_profile(self):
            return api.new("IOptimizationProfile")

        def build_serialized_network(self, network, config):
            if sim.current_device() != self._device:
                api.log.violation(f"Builder made on device {self._device} used with device {sim.current_device()} current")
            dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
            if dynamic and not config._profiles:
                ft.error(self._logger, "Network has dynamic or shape inputs, but no optimization profile has been defined.")
                return None
            profiles = []
            for p in config._profiles:
                for t in network._inputs:
                    if t.name not in p._shapes:
                        if t in dynamic:
                            ft.error(self._logger, f"optimization profile is missing values for input {t.name}")
                            return None
                        continue
                    for s in p._shapes[t.name]:
                        if len(s) != len(t.shape) or any(d >= 0 and d != v for d, v in zip(t.shape, s)):
                            ft.error(self._logger, f"profile shape {s} does not match {t.name} {t.shape}")
                            return None
                profiles.append({k: [list(x) for x in v] for k, v in p._shapes.items()})
            ft.during_build()
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building engine", None, 2)
                for i in range(2):
                    if not mon.step_complete("Building engine", i):
                        return None
                mon.phase_finish("Building engine")
            if config._cache is not None:
                config._cache._entries |= {json.dumps(p, sort_keys=True) for p in profiles}
            with ft.lock:
                ft.builds += 1
            props = sim.properties(sim.current_device())
            body = {"tensorrt": spec["version"], "gpu": props["name"], "cc": list(props["cc"]),
                    "inputs": [[t.name, t.dtype.name, list(t.shape)] for t in network._inputs],
                    "outputs": [[t.name, t.dtype.name, list(t.shape)] for t in network._outputs],
                    "profiles": profiles, "onnx": network._onnx.hex()}
            return api.new("IHostMemory", PLAN_MAGIC + json.dumps(body).encode())

    class Runtime:
        _fake_impl = True

        def __init__(self, logger) -> None:
            self._logger = logger
            ft.register_logger(logger, "Runtime(logger)")

        def deserialize_cuda_engine(self, serialized_engine):
            if len(ft.builders):
                api.log.violation("Runtime.deserialize_cuda_engine while a Builder is alive: the builder's memory and "
                                  "the engine's at once (peak memory on an 8 GB Jetson); drop the Builder first")
            blob = bytes(memoryview(serialized_engine))
            if not blob.startswith(PLAN_MAGIC):
                ft.error(self._logger, "Serialization assertion magicTagRead == kMAGIC_TAG failed")
                return None
            d = json.loads(blob[len(PLAN_MAGIC):])
            ft.deserialized += 1
            props = sim.properties(sim.current_device())
            if d["tensorrt"] != spec["version"] or d["cc"] != list(props["cc"]):
                ft.error(self._logger, f"The engine plan file is not compatible with this version of TensorRT "
                                       f"({d['tensorrt']} != {spec['version']}) or GPU")
                return None
            return api.new("ICudaEngine", plan=d, runtime=self)

    class ICudaEngine:
        _fake_impl = True

        def _setup(self, plan: dict, runtime: Any) -> None:
            self._plan = plan
            self._runtime = runtime
            self._device = sim.current_device()
            self._io = [(n, "INPUT", dt, s) for n, dt, s in plan["inputs"]] + \
                       [(n, "OUTPUT", dt, s) for n, dt, s in plan["outputs"]]
            self._session = None
            self._shapes_seen: dict = {}

        def _tensor(self, name):
            for t in self._io:
                if t[0] == name:
                    return t
            return None

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._plan["profiles"])

        def get_tensor_name(self, index):
            return self._io[index][0] if 0 <= index < len(self._io) else None

        def get_tensor_mode(self, name):
            t = self._tensor(name)
            return getattr(E["TensorIOMode"], t[1] if t else "NONE")

        def get_tensor_dtype(self, name):
            t = self._tensor(name)
            return dtype(t[2]) if t else dtype("FLOAT")

        def get_tensor_shape(self, name):
            t = self._tensor(name)
            return tuple(t[3]) if t else ()

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(s) for s in self._plan["profiles"][profile_index][name]]

        def create_execution_context(self, strategy=None):
            if sim.current_device() != self._device:
                api.log.violation(f"ICudaEngine.create_execution_context with device {sim.current_device()} "
                                  f"current, but the engine was deserialized on device {self._device}")
            ctx = api.new("IExecutionContext", engine=self)
            ft.contexts.add(ctx)
            return ctx

        def _output_shape(self, name: str, in_shapes: dict) -> tuple:
            """The output's shape for the given input shapes (ONNX shape inference on the graph)."""
            key = (name, tuple(sorted(in_shapes.items())))
            if key not in self._shapes_seen:
                self._shapes_seen[key] = self._infer(name, in_shapes)
            return self._shapes_seen[key]

        def _infer(self, name: str, in_shapes: dict) -> tuple:
            import onnx

            m = onnx.load_from_string(bytes.fromhex(self._plan["onnx"]))
            for vi in m.graph.input:
                if vi.name in in_shapes:
                    for d, v in zip(vi.type.tensor_type.shape.dim, in_shapes[vi.name]):
                        d.Clear()
                        d.dim_value = int(v)
            del m.graph.output[:]
            m.graph.output.extend([onnx.helper.make_empty_tensor_value_info(name)])
            m = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
            for vi in list(m.graph.output) + list(m.graph.value_info):
                if vi.name == name:
                    return tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
            raise AssertionError(f"cannot infer the shape of {name}")

        def _run(self, feeds: dict) -> dict:
            import onnxruntime as ort

            if self._session is None:
                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                self._session = ort.InferenceSession(bytes.fromhex(self._plan["onnx"]), so,
                                                     providers=["CPUExecutionProvider"])
            names = [o.name for o in self._session.get_outputs()]
            return dict(zip(names, self._session.run(names, feeds)))

    class IExecutionContext:
        _fake_impl = True

        def _setup(self, engine: Any) -> None:
            self._engine = engine
            self._profile = 0 if engine._plan["profiles"] else -1
            self._shapes: dict[str, tuple] = {}
            self._addr: dict[str, int] = {}
            self._device = sim.current_device()

        @property
        def active_optimization_profile(self) -> int:
            return self._profile

        def set_optimization_profile_async(self, profile_index, stream_handle):
            sim.check_stream(int(stream_handle), "IExecutionContext.set_optimization_profile_async")
            if not 0 <= profile_index < len(self._engine._plan["profiles"]):
                return False
            self._profile = int(profile_index)
            return True

        def set_input_shape(self, name, shape):
            t = self._engine._tensor(name)
            if t is None or t[1] != "INPUT":
                return False
            s = tuple(int(v) for v in shape)
            lo, _, hi = self._engine._plan["profiles"][self._profile][name]
            if len(s) != len(lo) or any(not a <= v <= b for a, v, b in zip(lo, s, hi)):
                return False
            self._shapes[name] = s
            return True

        def get_tensor_shape(self, name):
            return self._shapes.get(name, tuple(self._engine._tensor(name)[3]))

        def set_tensor_address(self, name, memory):
            if self._engine._tensor(name) is None:
                return False
            self._addr[name] = int(memory)
            return True

        def get_tensor_address(self, name):
            return self._addr.get(name, 0)

        def execute_async_v3(self, stream_handle):
            eng = self._engine
            where = "IExecutionContext.execute_async_v3"
            dev = sim.current_device()
            if dev != eng._device or dev != self._device:
                api.log.violation(f"{where} with device {dev} current; the engine lives on device {eng._device}, "
                                  f"the context was made with device {self._device} current")
            sim.check_stream(int(stream_handle), where, device=eng._device)
            for n, mode, _, _ in eng._io:
                lacks = "an address (set_tensor_address)" if n not in self._addr else \
                    "a shape (set_input_shape)" if mode == "INPUT" and n not in self._shapes else None
                if lacks:
                    api.log.violation(f"{where}: {mode.lower()} {n!r} has no {lacks}")
                    return False
            views = {}
            for n, mode, dt, _ in eng._io:
                if mode == "INPUT":
                    npt, shape = np.dtype(spec["nptype"][dt]), self._shapes[n]
                    nbytes = int(np.prod(shape)) * npt.itemsize
                    views[n] = (sim.device_view(self._addr[n], nbytes, f"{where} input {n!r}", device=eng._device),
                                npt, shape)
            in_shapes = {n: v[2] for n, v in views.items()}
            out_views = {}
            for n, mode, dt, _ in eng._io:
                if mode == "OUTPUT":
                    npt = np.dtype(spec["nptype"][dt])
                    shape = eng._output_shape(n, in_shapes)
                    nbytes = int(np.prod(shape)) * npt.itemsize
                    out_views[n] = (sim.device_view(self._addr[n], nbytes, f"{where} output {n!r}", device=eng._device),
                                    npt)

            def run() -> None:  # on the stream: reads the inputs when it runs, as the GPU does
                feeds = {n: np.frombuffer(b, dtype=t).reshape(sh).copy() for n, (b, t, sh) in views.items()}
                outs = eng._run(feeds)
                for n, (b, t) in out_views.items():
                    arr = np.ascontiguousarray(outs[n], dtype=t).view(np.uint8).reshape(-1)
                    if arr.size != b.size:
                        api.log.violation(f"{where}: output {n!r} is {arr.size} bytes, {b.size} expected")
                        continue
                    b[:] = arr

            sim.enqueue(int(stream_handle), run)
            return True

    impls = {"ILogger": ILogger, "Logger": Logger, "IProgressMonitor": IProgressMonitor, "ITensor": ITensor,
             "INetworkDefinition": INetworkDefinition, "OnnxParser": OnnxParser,
             "IOptimizationProfile": IOptimizationProfile, "ITimingCache": ITimingCache, "IHostMemory": IHostMemory,
             "IBuilderConfig": IBuilderConfig, "Builder": Builder, "Runtime": Runtime, "ICudaEngine": ICudaEngine,
             "IExecutionContext": IExecutionContext}
    api.impls = impls
    for q, impl in impls.items():
        if q in spec["classes"]:
            api.bind(q, impl)
    # Logger derives from ILogger in TensorRT: keep isinstance(Logger(), ILogger)
    mod = _FakeModule("tensorrt", api)
    for q in spec["classes"]:
        if "." in q:
            continue
        setattr(mod, q, api.enums.get(q) or api.classes.get(q) or api.bind(q))
    for n, c in spec["constants"].items():
        if c["kind"] == "value":
            setattr(mod, n, c["value"])
        elif c["kind"] == "enumval":
            setattr(mod, n, api.enums[c["enum"]](c["value"]))
        elif c["kind"] == "alias" and c["of"] in api.classes:
            setattr(mod, n, api.classes[c["of"]])
    mod.__version__ = spec["version"]

    def nptype(trt_type):
        api.check_call("", "nptype", (trt_type,), {})
        name = spec["nptype"].get(trt_type.name)
        if name is None:
            raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype. {trt_type}")
        return getattr(np, name)

    mod.nptype = nptype
    mod._fake = ft
    return mod


class _FakeModule(types.ModuleType):
    """A module whose missing attributes are violations (or probes, for getattr with a default)."""

    def __init__(self, name: str, api: Api) -> None:
        super().__init__(name)
        self.__dict__["_api"] = api

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        api = self.__dict__["_api"]
        api.missing(f"tensorrt.{name}", direct=_direct_access())
        raise AttributeError(f"module 'tensorrt' has no attribute '{name}' ({api.label})")

    def __getattribute__(self, name: str):
        v = super().__getattribute__(name)
        if not name.startswith("_"):
            super().__getattribute__("__dict__")["_api"].log.touch(f"tensorrt.{name}")
        return v
