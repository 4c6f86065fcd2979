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
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Entry", "entries", "COMMANDS", "BACKENDS"]

log = logging.getLogger(__name__)

COMMANDS = "hanrt.commands"
BACKENDS = "hanrt.backends"
_DIST = "hanrt"


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
    except ImportError:  # Python 3.10: no tomllib; the installed metadata stands alone
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
    name wins."""
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
    """Forget what was discovered (tests that install a plugin at run time)."""
    entries.cache_clear()
    _checkout_tables.cache_clear()
