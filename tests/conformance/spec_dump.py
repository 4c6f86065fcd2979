"""Dump the API of the real ``tensorrt`` or ``cuda.bindings.runtime`` module as JSON (run by fetch.py
in a subprocess whose ``HANRT_CONFORMANCE_PATH`` / ``LD_LIBRARY_PATH`` make it importable).

    python spec_dump.py trt|cuda OUT.json

TensorRT: every class (bases, members: methods with their pybind11 signature lines, overloads
included; properties and whether they have a setter; enum members and values), module functions
and constants. CUDA runtime: every function's signature line, enums, constants, struct types and
their fields, and what the calls hanrt makes return without a driver (``probes``).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys

for p in reversed(os.environ.get("HANRT_CONFORMANCE_PATH", "").split(os.pathsep)):
    if p:
        sys.path.insert(0, p)

_KEEP_DUNDER = {"__init__", "__len__", "__getitem__", "__iter__", "__int__", "__index__", "__eq__", "__buffer__"}


def signatures(obj) -> list[str]:
    """pybind11/Cython signature lines of ``obj``'s docstring: one per overload."""
    doc = getattr(obj, "__doc__", None) or ""
    lines = doc.strip().splitlines()
    if not lines:
        try:
            return [f"{getattr(obj, '__name__', '?')}{inspect.signature(obj)}"]
        except (TypeError, ValueError):
            return []
    if len(lines) > 1 and lines[1].strip() == "Overloaded function.":
        return [re.sub(r"^\d+\.\s+", "", ln.strip()) for ln in lines if re.match(r"^\d+\.\s+\w+\(", ln.strip())]
    return [lines[0].strip()]


def _is_enum_type(t) -> bool:
    return isinstance(t, type) and hasattr(t, "__members__")


def _enum(t) -> dict:
    return {"kind": "enum", "members": {k: int(v) for k, v in t.__members__.items()}}


def dump_class(cls, mod_name: str) -> dict:
    out: dict = {"kind": "class", "bases": [b.__qualname__ for b in cls.__mro__[1:]
                                            if (b.__module__ or "").startswith(mod_name)], "members": {}}
    if _is_enum_type(cls):
        out.update(_enum(cls))
    for name in dir(cls):
        if name.startswith("_") and name not in _KEEP_DUNDER:
            continue
        try:
            raw = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        owner = next((b.__qualname__ for b in cls.__mro__ if name in b.__dict__), cls.__qualname__)
        m: dict
        if isinstance(raw, property):
            m = {"kind": "property", "setter": raw.fset is not None, "doc": (raw.__doc__ or "").strip()[:200]}
            if raw.fset is not None and (raw.fset.__doc__ or "").strip():
                m["set_signature"] = raw.fset.__doc__.strip().splitlines()[0]  # "(arg0: C, arg1: T) -> None"
        elif type(raw).__name__ == "getset_descriptor":
            m = {"kind": "property", "setter": None}  # Cython struct field: settable is not declared
        elif isinstance(raw, staticmethod) or (type(raw).__name__ == "builtin_function_or_method"):
            m = {"kind": "staticmethod", "signatures": signatures(getattr(cls, name))}
        elif type(raw).__name__ in ("instancemethod", "function", "method_descriptor", "wrapper_descriptor",
                                    "cython_function_or_method") or callable(raw) and not isinstance(raw, type):
            if _is_enum_type(type(raw)):
                m = {"kind": "enumval", "enum": type(raw).__qualname__, "value": int(raw)}
            else:
                m = {"kind": "method", "signatures": signatures(getattr(cls, name))}
        elif isinstance(raw, type):
            m = {"kind": "class", "qualname": raw.__qualname__}
        elif _is_enum_type(type(raw)):
            m = {"kind": "enumval", "enum": type(raw).__qualname__, "value": int(raw)}
        else:
            m = {"kind": "attr", "type": type(raw).__name__, "repr": repr(raw)[:80]}
        m["owner"] = owner
        out["members"][name] = m
    return out


def dump_module(mod, mod_name: str) -> dict:
    classes: dict = {}
    functions: dict = {}
    constants: dict = {}
    todo = [getattr(mod, n) for n in dir(mod) if not n.startswith("_") and isinstance(getattr(mod, n), type)]
    names = {n: getattr(mod, n) for n in dir(mod) if not n.startswith("_")}
    seen = set()
    while todo:
        c = todo.pop()
        if c in seen or not (c.__module__ or "").startswith(mod_name.split(".")[0]):
            continue
        seen.add(c)
        classes[c.__qualname__] = dump_class(c, mod_name.split(".")[0])
        todo.extend(v for v in vars(c).values() if isinstance(v, type))
    for n, v in names.items():
        if isinstance(v, type):
            if v.__qualname__ != n:
                constants[n] = {"kind": "alias", "of": v.__qualname__}
        elif inspect.ismodule(v):
            continue
        elif callable(v) and not _is_enum_type(type(v)):
            functions[n] = {"signatures": signatures(v), "python": inspect.isfunction(v)}
        elif _is_enum_type(type(v)):
            constants[n] = {"kind": "enumval", "enum": type(v).__qualname__, "value": int(v)}
        elif isinstance(v, (int, float, str, bool)):
            constants[n] = {"kind": "value", "value": v}
        else:
            constants[n] = {"kind": "attr", "type": type(v).__name__}
    return {"classes": classes, "functions": functions, "constants": constants}


def dump_trt() -> dict:
    import tensorrt_bindings as t

    d = dump_module(t, "tensorrt_bindings")
    d["module"] = "tensorrt"
    d["version"] = t.__version__
    d["nptype"] = {}
    for name, member in t.DataType.__members__.items():
        try:
            d["nptype"][name] = t.nptype(member).__name__
        except TypeError:
            pass
    return d


#: the calls hanrt makes, with arguments of the right type, to record what they return without a driver
def _probes(rt) -> dict:
    stream = rt.cudaStream_t(init_value=0x1000)
    event = rt.cudaEvent_t(init_value=0x2000)
    calls = {
        "cudaSetDevice": (1,), "cudaGetDevice": (), "cudaGetDeviceCount": (), "cudaGetDeviceProperties": (0,),
        "cudaMalloc": (64,), "cudaFree": (0x3000,), "cudaHostAlloc": (64, rt.cudaHostAllocMapped),
        "cudaHostGetDevicePointer": (0x3000, 0), "cudaFreeHost": (0x3000,),
        "cudaStreamCreateWithFlags": (rt.cudaStreamNonBlocking,), "cudaStreamSynchronize": (stream,),
        "cudaStreamDestroy": (stream,), "cudaMemcpyAsync": (0x3000, 0x4000, 64, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
        "cudaEventCreateWithFlags": (rt.cudaEventDisableTiming,), "cudaEventRecord": (event, stream),
        "cudaEventSynchronize": (event,), "cudaEventDestroy": (event,), "cudaGetErrorName": (rt.cudaError_t.cudaErrorInsufficientDriver,),
        "cudaDriverGetVersion": (), "cudaRuntimeGetVersion": (),
    }
    out = {}
    for name, args in calls.items():
        if not hasattr(rt, name):
            out[name] = {"absent": True}
            continue
        try:
            ret = getattr(rt, name)(*args)
        except RuntimeError as exc:  # legacy cuda.cudart without a driver
            out[name] = {"raises": f"RuntimeError: {exc}"}
            continue
        ret = ret if isinstance(ret, tuple) else (ret,)
        out[name] = {"len": len(ret), "error": getattr(ret[0], "name", str(ret[0])),
                     "values": [type(v).__name__ for v in ret[1:]]}
    return out


def dump_cuda() -> dict:
    try:
        from cuda.bindings import runtime as rt
        from cuda.bindings import _version

        module, version = "cuda.bindings.runtime", _version.__version__
    except ImportError:  # cuda-python <= 12.5: the legacy module
        import cuda
        from cuda import cudart as rt

        module, version = "cuda.cudart", cuda.__version__
    d = dump_module(rt, "cuda")
    d["module"] = module
    d["version"] = version
    d["probes"] = _probes(rt)
    return d


def main() -> int:
    kind, out = sys.argv[1], sys.argv[2]
    d = dump_trt() if kind == "trt" else dump_cuda()
    with open(out, "w") as f:
        json.dump(d, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
