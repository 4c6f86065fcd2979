"""The ``hanrt`` command: one entry point, one module per subcommand.

Each module in this package defines ``COMMAND = Command(...)``: its name, one-line help, a
``configure(parser)`` that declares the options (stdlib only, so ``--help`` works with no extras
installed) and a ``run(args) -> int`` that imports what it needs lazily. A missing extra
raises :class:`~hanrt.errors.MissingDependencyError`, which names the extra to install.

``main(argv=None) -> int`` runs in-process for tests; errors derived from ``HanrtError`` print one
line (``hanrt: error: ...``) and map to their exit codes; SIGINT (Ctrl-C) exits with 130 and
SIGTERM (``kill``, ``timeout``, ``docker stop``) with 143, after the running command has cleaned
up (no temporary files; see each command).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import pkgutil
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from .. import __version__
from ..errors import HanrtError

__all__ = ["Command", "main", "build_parser"]

log = logging.getLogger("hanrt")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    order: int = 50
    description: str = ""


def _commands(only: str | None = None) -> list[Command]:
    """Every subcommand (one module each), or just ``only``'s when it names one: then the other
    modules (and what they import) are not loaded, which keeps ``hanrt upscale``'s start short."""
    cmds = []
    names = [mod.name for mod in pkgutil.iter_modules(__path__) if not mod.name.startswith("_")]
    if only in names:
        names = [only]
    for name in names:
        m = importlib.import_module(f"{__name__}.{name}")
        c = getattr(m, "COMMAND", None)
        if isinstance(c, Command):
            cmds.append(c)
    return sorted(cmds, key=lambda c: (c.order, c.name))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``hanrt`` parser; ``only``: configure just that subcommand (see :func:`_commands`)."""
    p = argparse.ArgumentParser(
        prog="hanrt",
        description="hanrt: 4x super-resolution with HAN on NVIDIA GPUs (TensorRT, ONNX Runtime "
        "CUDA) and any CPU (ONNX Runtime).",
    )
    p.add_argument("--version", action="version", version=f"hanrt {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for c in _commands(only):
        sp = sub.add_parser(c.name, help=c.help, description=c.description or c.help,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.configure(sp)
        sp.set_defaults(_run=c.run)
    return p


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    if not any(getattr(h, "_hanrt", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("hanrt: %(levelname)s: %(message)s"))
        h._hanrt = True  # type: ignore[attr-defined]
        root.addHandler(h)
    for name in ("hanrt", "hanrt_export", "hanrt_bench"):
        logging.getLogger(name).setLevel(level)


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
    first = next((a for a in argv if not a.startswith("-")), None)  # the subcommand, if any
    parser = build_parser(first if first is not None and "-h" not in argv[:argv.index(first)]
                          and "--help" not in argv[:argv.index(first)] else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        with _stop_on_signals():
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
