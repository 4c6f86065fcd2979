"""The subcommands hanrt_export registers (entry points of group ``hanrt.commands`` in pyproject.toml):
``export``, ``train``, ``lint``. Each module imports only the standard library and hanrt at module
level, so ``hanrt --help`` needs no torch; each handler takes a typed request
(:mod:`hanrt_export.requests`) built once from the options."""
