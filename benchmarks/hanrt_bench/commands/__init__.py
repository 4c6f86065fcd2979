"""The subcommands hanrt_bench registers (entry points of group ``hanrt.commands`` in pyproject.toml):
``bench`` and ``eval``. Stdlib and hanrt only at module level (``--help`` needs no extras); each
handler in :mod:`hanrt_bench.cli` takes a typed request (:mod:`hanrt_bench.requests`)."""
