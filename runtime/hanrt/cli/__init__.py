"""The ``hanrt`` command: one entry point; every subcommand a registered :class:`Command`.

A subcommand is ``COMMAND = Command(...)`` in some module, registered as an entry point of group
``hanrt.commands`` (:mod:`hanrt.plugins`): the runtime's own (``upscale``, ``stream``, ``build``,
``info``, ``serve``) and those the host-side packages register for themselves (``export``,
``train``, ``lint``, ``bench``, ``eval``), which this package never names. A command has its name,
one-line help, a ``configure(parser)`` that declares the options (stdlib only, so ``--help`` works
with no extras installed) and a ``run(args) -> int`` that imports what it needs lazily; host-side
handlers take a typed request built once from the options (:func:`request_from`). A missing
extra raises :class:`~hanrt.errors.MissingDependencyError`, which names the extra to install.

``main(argv=None) -> int`` runs in-process for tests; errors derived from ``HanrtError`` print one
line (``hanrt: error: ...``) and map to their exit codes; SIGINT (Ctrl-C) exits with 130 and
SIGTERM (``kill``, ``timeout``, ``docker stop``) with 143, after the running command has cleaned
up (no temporary files; see each command).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

from .. import __version__, plugins
from ..errors import HanrtError, MissingDependencyError

__all__ = ["Command", "main", "build_parser", "commands", "request_from"]

log = logging.getLogger("hanrt")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    order: int = 50
    description: str = ""


R = TypeVar("R")


def request_from(cls: type[R], args: argparse.Namespace, **values: Any) -> R:
    """The typed request ``cls`` (a dataclass) from the parsed options: each field from the option
    of the same name, or from ``values``. Built once, so handlers never see the Namespace."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    return cls(**{n: values[n] if n in values else getattr(args, n) for n in names})  # type: ignore[call-arg]


_unavailable: dict[str, str] = {}


def commands(only: str | None = None) -> list[Command]:
    """Every registered subcommand (:mod:`hanrt.plugins`), or just ``only``'s when one is registered
    by that name (the other modules are then not imported). A command whose module cannot be
    imported (its package is not installed) is left out."""
    _unavailable.clear()
    entries = plugins.entries(plugins.COMMANDS)
    if any(e.name == only for e in entries):
        entries = tuple(e for e in entries if e.name == only)
    cmds = []
    for e in entries:
        try:
            c = e.load()
        except ImportError as exc:
            log.debug("command %s (%s, by %s) left out: %s", e.name, e.value, e.source, exc)
            _unavailable[e.name] = (f"hanrt {e.name} is registered (by {e.source}: {e.value}) but cannot be "
                                    f"imported ({exc}); install the package that provides it")
            continue
        if not isinstance(c, Command) or c.name != e.name:
            raise TypeError(f"entry point {e.name} = {e.value} (by {e.source}) is not a Command named {e.name!r}")
        cmds.append(c)
    return sorted(cmds, key=lambda c: (c.order, c.name))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``hanrt`` parser; ``only``: configure just that subcommand (see :func:`commands`)."""
    p = argparse.ArgumentParser(
        prog="hanrt",
        description="hanrt: 4x super-resolution with HAN on NVIDIA GPUs (TensorRT, ONNX Runtime "
        "CUDA) and any CPU (ONNX Runtime).",
    )
    p.add_argument("--version", action="version", version=f"hanrt {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for c in commands(only):
        sp = sub.add_parser(c.name, help=c.help, description=c.description or c.help,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.configure(sp)
        sp.set_defaults(_run=c.run)
    return p


@contextlib.contextmanager
def _logging(verbose: int, quiet: bool, run: Callable[..., Any]) -> Iterator[None]:
    """While a command runs: hanrt's handler on the root logger, and the level of the ``hanrt``
    logger and of the package the command comes from (a plugin's logs too); all put back as they
    were afterwards, so an in-process ``main(["-q", ...])`` leaves global logging as it found it."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    added = None
    if not any(getattr(h, "_hanrt", False) for h in root.handlers):
        added = logging.StreamHandler(sys.stderr)
        added.setFormatter(logging.Formatter("hanrt: %(levelname)s: %(message)s"))
        added._hanrt = True  # type: ignore[attr-defined]
        root.addHandler(added)
    names = dict.fromkeys(("hanrt", (getattr(run, "__module__", "") or "hanrt").split(".")[0]))
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(level)
    try:
        yield
    finally:
        for n, lv in saved.items():
            logging.getLogger(n).setLevel(lv)
        if added is not None:
            root.removeHandler(added)


@contextlib.contextmanager
def _stop_on_signals():
    """While the command runs (main thread only), SIGINT and SIGTERM raise
    :class:`~hanrt.errors.Interrupted` (after noting the signal in ``hanrt.errors.stop_signal``)."""
    from .. import errors

    errors.stop_signal = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        errors.stop_signal = signum
        raise errors.Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        errors.stop_signal = None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hanrt`` command; returns the exit code (0 success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)  # the subcommand, if any
    only = argv[first] if first is not None and not {"-h", "--help"} & set(argv[:first]) else None
    parser = build_parser(only)
    if only in _unavailable:
        print(f"hanrt: error: {_unavailable[only]}.", file=sys.stderr)
        return MissingDependencyError.exit_code
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with _logging(args.verbose, args.quiet, args._run), _stop_on_signals():
            return int(args._run(args) or 0)
    except HanrtError as exc:
        print(f"hanrt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = int(getattr(exc, "signum", signal.SIGINT))
        print(f"hanrt: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
