"""The API checks the fakes share: signatures parsed from pybind11/Cython docstrings, argument
matching like pybind11's overload resolution, classes whose members are exactly a spec's, enums.

Every check that fails is recorded in :data:`LOG` (``violations``) *and* raised as the error the
real module would raise (``TypeError`` for arguments no overload accepts, ``AttributeError`` for a
member the version lacks or a property without a setter), so hanrt fails as it would for real and
the suite still sees the violation if hanrt swallows the error.
"""

from __future__ import annotations

import dis
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PROCEED", "LOG", "Log", "Param", "Signature", "parse_signature", "Api", "FakeGap"]


PROCEED = object()  # a failure injector's "behave normally this time"


class FakeGap(NotImplementedError):
    """hanrt used a real member the fakes do not simulate: extend the fake (not a hanrt bug)."""


@dataclass
class Log:
    violations: list[str] = field(default_factory=list)
    exercised: set[str] = field(default_factory=set)
    probed_missing: set[str] = field(default_factory=set)  # getattr(x, name, default) / hasattr on absent names
    lock: threading.Lock = field(default_factory=threading.Lock)

    def violation(self, msg: str) -> None:
        with self.lock:
            self.violations.append(msg)

    def touch(self, name: str) -> None:
        self.exercised.add(name)

    def reset(self) -> None:
        self.violations.clear()
        self.exercised.clear()
        self.probed_missing.clear()


LOG = Log()

# --- signatures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "" when the docstring gives none (Cython untyped)
    has_default: bool
    star: str = ""  # "*" or "**"


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple[Param, ...]
    returns: str
    text: str

    def bind(self, args: tuple, kwargs: dict, types: "TypeMatcher") -> str | None:
        """None if the call matches this overload, else why not."""
        params = [p for p in self.params if not p.star]
        if any(p.star == "*" for p in self.params) or any(p.star == "**" for p in self.params):
            return None  # *args/**kwargs: anything goes
        if len(args) > len(params):
            return f"takes {len(params)} positional arguments, got {len(args)}"
        bound: dict[str, Any] = {}
        for p, a in zip(params, args):
            bound[p.name] = a
        for k, v in kwargs.items():
            if not any(p.name == k for p in params):
                return f"no parameter named {k!r}"
            if k in bound:
                return f"{k!r} given twice"
            bound[k] = v
        for p in params:
            if p.name not in bound:
                if not p.has_default:
                    return f"missing argument {p.name!r}"
                continue
            if not types.accepts(bound[p.name], p.type):
                return f"argument {p.name!r} must be {p.type}, got {type(bound[p.name]).__name__} {bound[p.name]!r:.60}"
        return None


def _split_top(s: str, sep: str = ",") -> list[str]:
    out, depth, cur, quote = [], 0, [], ""
    for ch in s:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


_SIG = re.compile(r"^(\w+)\((.*)\)\s*(?:->\s*(.*))?$")


def parse_signature(text: str, *, drop_self: bool) -> Signature:
    m = _SIG.match(text.strip())
    if not m:
        return Signature("?", (Param("args", "", True, "*"), Param("kwargs", "", True, "**")), "", text)
    params = []
    for raw in _split_top(m.group(2)):
        if raw in ("*", "/"):
            continue
        star = "**" if raw.startswith("**") else "*" if raw.startswith("*") else ""
        raw = raw.lstrip("*")
        default = False
        if "=" in raw:
            head = _split_top(raw, "=")[0]
            default = True
            raw = head
        if ":" in raw:
            name, typ = (x.strip() for x in raw.split(":", 1))
        else:
            words = raw.split()  # Cython: "size_t count", "unsigned int flags", or just "dst"
            name, typ = words[-1], " ".join(words[:-1])
        params.append(Param(name, typ, default, star))
    if drop_self and params and params[0].name == "self":
        params = params[1:]
    return Signature(m.group(1), tuple(params), (m.group(3) or "").strip(), text.strip())


# --- argument types ------------------------------------------------------------------------------

_INT = {"int", "typing.SupportsInt", "SupportsInt", "size_t", "unsigned int", "unsigned long", "long",
        "unsigned long long", "int64_t", "uint64_t", "intptr_t"}
_FLOAT = {"float", "typing.SupportsFloat", "SupportsFloat", "double"}
_BUFFER = {"buffer", "bytes", "typing_extensions.Buffer", "collections.abc.Buffer", "Buffer"}


class TypeMatcher:
    """Whether a value converts to a docstring type, as pybind11's casters (convert mode) decide."""

    def __init__(self, api: "Api") -> None:
        self.api = api

    def accepts(self, v: Any, typ: str) -> bool:
        t = typ.strip()
        if not t or t in ("object", "typing.Any", "Any", "capsule", "numpy.ndarray", "os.PathLike", "function",
                          "Callable", "typing.Callable") or t.startswith(("Callable", "typing.Callable", "numpy.")):
            return True
        t = re.sub(r"^(tensorrt_bindings\.tensorrt\.|tensorrt\.|typing\.|cuda\.bindings\.runtime\.)", "", t)
        m = re.match(r"^Optional\[(.*)\]$", t)
        if m:
            return v is None or self.accepts(v, m.group(1))
        if "|" in t:
            return any(self.accepts(v, part) for part in _split_top(t, "|"))
        m = re.match(r"^Union\[(.*)\]$", t)
        if m:
            return any(self.accepts(v, part) for part in _split_top(m.group(1)))
        m = re.match(r"^(?:List|list|Sequence|Iterable|tuple|Tuple)\[(.*)\]$", t)
        if m:
            inner = _split_top(m.group(1))
            return isinstance(v, (list, tuple)) and all(self.accepts(x, inner[0]) for x in v if inner[0] != "...")
        if t in _INT:
            return not isinstance(v, (float, str, bytes)) and hasattr(v, "__index__")
        if t in _FLOAT:
            return isinstance(v, (int, float)) and not isinstance(v, bool) or hasattr(v, "__float__") and not isinstance(v, str)
        if t == "bool":
            return isinstance(v, bool) or type(v).__name__ == "bool_"
        if t == "str":
            return isinstance(v, (str, bytes))
        if t in _BUFFER:
            try:
                memoryview(v)
                return True
            except TypeError:
                return False
        if t in ("Dims", "Dims32", "Dims64", "Dims2", "Dims3", "Dims4", "DimsHW", "Permutation"):
            return isinstance(v, (list, tuple)) and all(hasattr(x, "__index__") and not isinstance(x, float) for x in v)
        return self.api.is_instance(v, t)


# --- the Api: classes, enums and modules made from a spec -------------------------------------


def _direct_access() -> bool:
    """True if the attribute lookup now failing is ``obj.name`` in the caller (a use), False if it is
    ``getattr(obj, name, default)`` / ``hasattr`` (a probe for a member that may be absent)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename == __file__:
        f = f.f_back
    if f is None:
        return True
    try:
        op = dis.opname[f.f_code.co_code[f.f_lasti]]
    except IndexError:
        return True
    return op in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "IMPORT_FROM", "LOAD_GLOBAL")


class FakeEnumMember:
    """A pybind11 enum value: ``int()``, ``__index__``, ``.name``, ``.value``; equal only to itself."""

    __slots__ = ("_enum", "name", "value")

    def __init__(self, enum: type, name: str, value: int) -> None:
        object.__setattr__(self, "_enum", enum)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeEnumMember) and other._enum is self._enum and other.value == self.value

    def __hash__(self) -> int:
        return hash((self._enum.__qualname__, self.value))

    def __repr__(self) -> str:
        return f"<{self._enum.__qualname__.split('.')[-1]}.{self.name}: {self.value}>"


class Api:
    """One module version's spec, the fake classes made from it, and the checks they share."""

    def __init__(self, spec: dict, label: str, log: Log = LOG) -> None:
        self.spec = spec
        self.label = label
        self.log = log
        self.types = TypeMatcher(self)
        self.classes: dict[str, type] = {}
        self.enums: dict[str, type] = {}
        self._sigs: dict[tuple[str, str], list[Signature]] = {}
        self.impls: dict[str, type] = {}
        #: failure injection: "Class.method" -> fn(*args) giving the value TensorRT returns on failure
        #: (None from create_execution_context, -1 from add_optimization_profile...), or PROCEED
        self.fail: dict[str, Any] = {}
        for q, c in spec["classes"].items():
            if c.get("kind") == "enum":
                vals = {n: m if isinstance(m, int) else m["value"] for n, m in c["members"].items()
                        if isinstance(m, int) or m.get("kind") == "enumval" and m.get("enum") == q}
                self.enums[q] = self._make_enum(q, vals)

    # enum construction -------------------------------------------------------------------------
    def _make_enum(self, qualname: str, members: dict[str, int]) -> type:
        api = self

        class Meta(type):
            def __getattr__(cls, name):  # only for names the enum lacks
                if name.startswith("_"):
                    raise AttributeError(name)
                api.missing(f"{qualname}.{name}", direct=_direct_access())
                raise AttributeError(f"type object '{qualname}' has no attribute '{name}' ({api.label})")

            def __iter__(cls):
                return iter(cls.__members__.values())

        ns: dict[str, Any] = {"__qualname__": qualname, "__module__": self.spec.get("module", "fake")}
        E = Meta(qualname.split(".")[-1], (), ns)
        E.__qualname__ = qualname
        mem = {k: FakeEnumMember(E, k, int(v)) for k, v in members.items()}
        for k, v in mem.items():
            setattr(E, k, v)
        E.__members__ = mem
        by_value = {}
        for v in mem.values():
            by_value.setdefault(v.value, v)

        def _new(cls, value):
            try:
                return by_value[int(value)]
            except KeyError:
                raise ValueError(f"{value} is not a valid {qualname}") from None

        E.__new__ = _new
        return E

    # records ---------------------------------------------------------------------------------
    def missing(self, name: str, *, direct: bool) -> None:
        if direct:
            self.log.violation(f"{name}: no such member in {self.label}")
        else:
            self.log.probed_missing.add(name)

    def member(self, qualname: str, name: str) -> dict | None:
        c = self.spec["classes"].get(qualname)
        if c is None:
            return None
        m = c["members"].get(name)
        return {"kind": "enumval", "enum": qualname, "value": m} if isinstance(m, int) else m  # an enum alias

    def signatures(self, qualname: str, name: str) -> list[Signature]:
        key = (qualname, name)
        if key not in self._sigs:
            if qualname:
                m = self.member(qualname, name) or {}
                texts = m.get("signatures", [])
                drop = m.get("kind") == "method"
            else:
                texts = self.spec["functions"].get(name, {}).get("signatures", [])
                drop = False
            self._sigs[key] = [parse_signature(t, drop_self=drop) for t in texts]
        return self._sigs[key]

    def check_call(self, qualname: str, name: str, args: tuple, kwargs: dict) -> None:
        """TypeError (recorded) unless some overload of ``qualname.name`` accepts the arguments."""
        sigs = self.signatures(qualname, name)
        if not sigs:
            return
        whys = [s.bind(args, kwargs, self.types) for s in sigs]
        if any(w is None for w in whys):
            return
        full = f"{qualname}.{name}" if qualname else name
        shown = ", ".join([repr(a)[:40] for a in args] + [f"{k}={v!r:.40}" for k, v in kwargs.items()])
        lines = "\n".join(f"    {i + 1}. {s.text}  [{w}]" for i, (s, w) in enumerate(zip(sigs, whys)))
        msg = (f"{full}(): incompatible function arguments ({self.label}). The following argument types are "
               f"supported:\n{lines}\nInvoked with: {shown}")
        self.log.violation(msg)
        raise TypeError(msg)

    def is_instance(self, v: Any, typ: str) -> bool:
        typ = typ.strip()
        if typ in self.enums:
            return isinstance(v, FakeEnumMember) and v._enum is self.enums[typ]
        cls = self.classes.get(typ)
        if v is None:
            return True  # pybind11 passes None for a pointer argument; the docstring cannot tell pointers apart
        if cls is not None:
            return isinstance(v, cls)
        if typ in self.spec["classes"]:
            return any(getattr(c, "_q", None) == typ or c.__qualname__ == typ for c in type(v).__mro__)
        return True  # a type the spec does not describe: not checked

    # checked classes -------------------------------------------------------------------------
    def bind(self, qualname: str, impl: type | None = None) -> type:
        """A class named ``qualname`` whose instances expose exactly the spec's members; the
        behaviour comes from ``impl`` (methods and properties by their real names)."""
        if qualname in self.classes:
            return self.classes[qualname]
        if qualname in self.enums:
            return self.enums[qualname]
        api = self
        spec = self.spec["classes"].get(qualname)
        if spec is None:
            raise KeyError(f"{qualname} is not in {self.label}")
        ns: dict[str, Any] = {"_q": qualname, "_api": api, "__qualname__": qualname}
        for name, m in spec["members"].items():
            if isinstance(m, int):
                continue  # an enum's alias: not a class
            if m.get("kind") == "enumval" and m["enum"] in self.enums:
                ns[name] = self.enums[m["enum"]](m["value"])
            elif m.get("kind") == "class" and m.get("qualname") in self.enums:
                ns[name] = self.enums[m["qualname"]]
        impl_init = getattr(impl, "__init__", None) if impl is not None else None

        def __init__(self, *args, **kwargs):
            api.log.touch(f"{qualname}.__init__")
            api.check_call(qualname, "__init__", args, kwargs)
            if impl_init is not None and impl_init is not object.__init__:
                impl_init(self, *args, **kwargs)

        ns["__init__"] = __init__

        class Meta(type):
            def __getattr__(cls, name):
                if name.startswith("_"):
                    raise AttributeError(name)
                api.missing(f"{qualname}.{name}", direct=_direct_access())
                raise AttributeError(f"type object '{qualname}' has no attribute '{name}' ({api.label})")

        parents = tuple(self.bind(b, self.impls.get(b)) for b in spec.get("bases", [])
                        if b in self.spec["classes"] and b not in self.enums)
        if parents:
            Meta = type("Meta", (Meta,) + tuple(type(p) for p in parents if type(p) is not type), {})
        bases = ((impl,) if impl is not None else ()) + parents if parents else (Checked,) + ((impl,) if impl is not None else ())
        C = Meta(qualname.split(".")[-1], bases, ns)
        self.classes[qualname] = C
        return C

    def new(self, qualname: str, *args: Any, **state: Any) -> Any:
        """An instance made by the fake itself (as TensorRT returns them), bypassing the public constructor."""
        C = self.classes[qualname]
        obj = bytes.__new__(C, *args) if issubclass(C, bytes) else object.__new__(C)
        setup = getattr(C, "_setup", None)
        if setup is not None:
            setup(obj, **state)
        return obj


class Checked:
    """Mixin for classes made by :meth:`Api.bind`: members per the spec, arguments checked."""

    _q: str
    _api: Api

    def __new__(cls, *args, **kwargs):
        return bytes.__new__(cls) if issubclass(cls, bytes) else object.__new__(cls)

    def _user_defined(self, name: str) -> bool:
        """Whether ``name`` comes from a Python subclass of the bound class (``class L(trt.ILogger)``)."""
        cls = type(self)
        C = cls._api.classes[cls._q]
        if cls is C:
            return False
        for b in cls.__mro__:
            if b is C:
                break
            if name in b.__dict__:
                return True
        return name in object.__getattribute__(self, "__dict__")

    def __getattribute__(self, name: str):
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls = type(self)
        api, q = cls._api, cls._q
        m = api.member(q, name)
        if m is None or self._user_defined(name):
            if self._user_defined(name):
                return object.__getattribute__(self, name)
            api.missing(f"{q}.{name}", direct=_direct_access())
            raise AttributeError(f"'{q}' object has no attribute '{name}' ({api.label})")
        api.log.touch(f"{q}.{name}")
        try:
            val = object.__getattribute__(self, name)
        except AttributeError:
            raise FakeGap(f"the fake {q} does not simulate {name} ({api.label}): extend tests/trtfakes") from None
        if m.get("kind") == "method" and callable(val):
            def call(*args, **kwargs):
                api.check_call(q, name, args, kwargs)
                inject = api.fail.get(f"{q}.{name}")
                if inject is not None:
                    got = inject(*args, **kwargs)
                    if got is not PROCEED:
                        return got
                return val(*args, **kwargs)

            call.__name__ = name
            return call
        return val

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("_"):
            return object.__setattr__(self, name, value)
        cls = type(self)
        api, q = cls._api, cls._q
        m = api.member(q, name)
        if m is None:
            if cls is not api.classes[q]:
                return object.__setattr__(self, name, value)  # a Python subclass's own attribute
            api.missing(f"{q}.{name}", direct=True)
            raise AttributeError(f"'{q}' object has no attribute '{name}' ({api.label})")
        if m.get("kind") != "property" or m.get("setter") is False:
            api.log.violation(f"{q}.{name} is read-only in {api.label} (no setter)")
            raise AttributeError(f"can't set attribute '{name}' of '{q}' ({api.label}): it has no setter")
        setter = re.match(r"^\(arg0: [^,]+, arg1: (.+)\) -> None$", m.get("set_signature", ""))
        if setter and not api.types.accepts(value, setter.group(1)):
            msg = (f"(): incompatible function arguments ({api.label}): {q}.{name} takes {setter.group(1)}, "
                   f"got {type(value).__name__} {value!r:.60}")
            api.log.violation(msg)
            raise TypeError(msg)
        api.log.touch(f"{q}.{name}=")
        object.__setattr__(self, name, value)
