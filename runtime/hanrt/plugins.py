"""Plugins: ``hanrt`` subcommands and backends arrive as entry points (flask's ``flask.commands``).

Two groups, each entry ``name = "module:ATTRIBUTE"``:

- ``hanrt.commands``: a :class:`hanrt.cli.Command` (the runtime's own, and those of the host-side
  packages installed beside it);
- ``hanrt.backends``: a :class:`hanrt.backends.base.BackendSpec`.

Where they come from: the entry points of every installed distribution (``importlib.metadata``)
and, when the running ``hanrt`` is a source checkout (a ``pyproject.toml`` two folders above the
package), the ``[project.entry-points]`` tables of that file -- so a checkout used through
``PYTHONPATH`` sees its own commands and backends even where no metadata (or a stale one from
another checkout) is installed. Those tables then stand in for the ``hanrt`` distribution's
metadata. Listing names imports nothing; :meth:`Entry.load` imports one module.

**Start-up.** Reading every distribution's metadata costs more than the rest of ``hanrt --help``
bar numpy (importing ``importlib.metadata`` alone pulls in the ``email`` package), so what was
found is cached as JSON under ``$XDG_CACHE_HOME/hanrt/plugins`` (``~/.cache/hanrt/plugins``), one
file per interpreter, and used while its stamp holds: the ``*.dist-info``/``*.egg-info`` folders on
``sys.path`` (installing, upgrading or removing a distribution changes them) with the modification
time of each ``entry_points.txt``, and the checkout's ``pyproject.toml`` with its modification time
(one directory listing per ``sys.path`` folder, no metadata read). ``HANRT_PLUGIN_CACHE=0`` turns
the cache off; a cache that cannot be written is simply not used.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Entry", "entries", "COMMANDS", "BACKENDS", "CACHE_ENV"]

from .errors import HanrtError

log = logging.getLogger(__name__)

COMMANDS = "hanrt.commands"
BACKENDS = "hanrt.backends"
_DIST = "hanrt"
#: ``0`` turns the discovery cache off.
CACHE_ENV = "HANRT_PLUGIN_CACHE"
_GROUPS = (COMMANDS, BACKENDS)


@dataclass(frozen=True)
class Entry:
    """One registration: its name, ``"module:attribute"`` and where it was declared."""

    name: str
    value: str
    source: str

    def load(self) -> Any:
        mod, _, attr = self.value.partition(":")
        obj = importlib.import_module(mod.strip())
        for part in attr.strip().split(".") if attr.strip() else ():
            obj = getattr(obj, part)
        return obj


def _checkout_pyproject() -> Path | None:
    here = Path(__file__).resolve().parent  # .../runtime/hanrt
    p = here.parents[1] / "pyproject.toml"
    return p if p.is_file() else None


@functools.lru_cache(maxsize=None)
def _checkout_tables() -> dict[str, dict[str, str]] | None:
    path = _checkout_pyproject()
    if path is None:
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli (pytest's own dependency there), else the metadata alone
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            log.debug("no TOML reader: %s is not read; installed metadata only", path)
            return None
    with open(path, "rb") as f:
        data = tomllib.load(f)
    if data.get("project", {}).get("name") != _DIST:
        return None
    return {g: dict(t) for g, t in data["project"].get("entry-points", {}).items()}


@functools.lru_cache(maxsize=None)
def entries(group: str) -> tuple[Entry, ...]:
    """Every registration of ``group``: the checkout's own first, then those of the installed
    distributions (by distribution name), each in its file's order; the first of two with one
    name wins. hanrt's groups come from the cache when it is current (see the module docstring)."""
    if group not in _GROUPS:
        return _discover(group)
    return _cached()[group]


def _stamp() -> list:
    """What the discovery depends on: every ``*.dist-info``/``*.egg-info`` folder on ``sys.path``
    with the modification time of its ``entry_points.txt``, and the checkout's ``pyproject.toml``
    (one directory listing per ``sys.path`` folder: no metadata is read)."""
    out: list = []
    for p in sys.path:
        try:
            with os.scandir(p or ".") as it:
                names = sorted(e.name for e in it if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:  # a zip file or a folder that does not exist
            continue
        for n in names:
            try:
                t = os.stat(os.path.join(p or ".", n, "entry_points.txt")).st_mtime_ns
            except OSError:
                t = None
            out.append([p, n, t])
    py = _checkout_pyproject()
    out.append([str(py), py.stat().st_mtime_ns if py else None])
    return out


def _cache_file() -> Path | None:
    """One cache file per interpreter and checkout (rewritten when its stamp no longer matches)."""
    if os.environ.get(CACHE_ENV, "1") == "0":
        return None
    import zlib  # a name, not a digest to trust: the stamp inside decides (zlib is already loaded)

    key = f"{sys.executable}\0{sys.version}\0{Path(__file__).resolve()}"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hanrt" / "plugins" / f"{zlib.crc32(key.encode()):08x}.json"


@functools.lru_cache(maxsize=None)
def _cached() -> dict[str, tuple[Entry, ...]]:
    import json

    path = _cache_file()
    stamp = _stamp() if path is not None else None
    if path is not None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["stamp"] == stamp:
                return {g: tuple(Entry(*e) for e in data[g]) for g in _GROUPS}
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: discover, and write it anew
    found = {g: _discover(g) for g in _GROUPS}
    if path is not None:
        try:
            from .io.atomic import atomic_output

            path.parent.mkdir(parents=True, exist_ok=True)
            data = {"stamp": stamp, **{g: [[e.name, e.value, e.source] for e in es] for g, es in found.items()}}
            with atomic_output(path, overwrite=True, fsync=False) as tmp:
                tmp.write_text(json.dumps(data), encoding="utf-8")
        except (OSError, HanrtError):
            log.debug("plugin cache %s not written", path, exc_info=True)
    return found


def _discover(group: str) -> tuple[Entry, ...]:
    from importlib.metadata import entry_points

    out: dict[str, Entry] = {}
    checkout = _checkout_tables()
    if checkout is not None:
        for name, value in checkout.get(group, {}).items():
            out.setdefault(name, Entry(name, value, "pyproject.toml"))
    found = []
    for ep in entry_points(group=group):
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        if checkout is not None and dist.lower() == _DIST:
            continue  # a checkout's own table replaces the (maybe stale) installed metadata
        found.append(Entry(ep.name, ep.value, dist or "?"))
    for e in sorted(found, key=lambda e: e.source):  # stable: each distribution keeps its order
        if e.name in out and out[e.name].value != e.value:
            log.debug("%s %r from %s ignored: %s already registers it", group, e.name, e.source, out[e.name].source)
        out.setdefault(e.name, e)
    return tuple(out.values())


def clear_cache() -> None:
    """Forget what was discovered in this process (tests that install a plugin at run time)."""
    entries.cache_clear()
    _cached.cache_clear()
    _checkout_tables.cache_clear()
