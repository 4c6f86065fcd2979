"""The hanrt error tree.

Every error hanrt raises on purpose derives from :class:`HanrtError`. Messages state what was
asked, what was found and what to do. The CLI maps each class to an exit code
(:data:`EXIT_CODES`); anything else is a bug and exits with 1 and a traceback. SIGINT and SIGTERM
stop the command with :class:`Interrupted` (exit 130 / 143).

::

    HanrtError
    ├── UsageError              bad arguments or options               (exit 2)
    ├── InputError              an input file/image/checkpoint is bad  (exit 3)
    │   └── CheckpointError     not a loadable HAN checkpoint          (exit 3)
    ├── OutputError             the output cannot be written           (exit 4)
    ├── MissingDependencyError  an optional extra is not installed     (exit 5)
    ├── ModelError              a model/engine does not fit the ask    (exit 6)
    │   └── EngineMismatchError engine built for another GPU/TensorRT  (exit 6)
    ├── ParityError             an export failed its parity gate       (exit 7)
    └── BackendError            a backend failed while running         (exit 8)
"""

from __future__ import annotations

__all__ = [
    "HanrtError",
    "UsageError",
    "InputError",
    "CheckpointError",
    "OutputError",
    "MissingDependencyError",
    "ModelError",
    "EngineMismatchError",
    "ParityError",
    "BackendError",
    "EXIT_CODES",
    "Interrupted",
    "exit_code_for",
    "require",
]


class HanrtError(Exception):
    """Root of every error hanrt raises on purpose."""

    exit_code = 1


class UsageError(HanrtError):
    """The caller asked for something that makes no sense (bad option, bad value)."""

    exit_code = 2


class InputError(HanrtError):
    """An input (image, video, checkpoint, folder) is missing, unreadable or malformed."""

    exit_code = 3


class CheckpointError(InputError):
    """A file is not a loadable HAN checkpoint (wrong format, architecture, keys or shapes)."""


class OutputError(HanrtError):
    """An output cannot be written (exists without --overwrite, unwritable, disk full)."""

    exit_code = 4


class MissingDependencyError(HanrtError, ImportError):
    """An optional package is missing; the message names the extra that installs it."""

    exit_code = 5


class ModelError(HanrtError):
    """A model or engine cannot do what was asked (scale, shape, precision, layout)."""

    exit_code = 6


class EngineMismatchError(ModelError):
    """A TensorRT engine was built for another GPU, TensorRT version or ONNX file."""


class ParityError(HanrtError):
    """An exported graph disagrees with the PyTorch model beyond the tolerance."""

    exit_code = 7


class BackendError(HanrtError):
    """A backend failed at run time (CUDA error, runtime refused the graph, ...)."""

    exit_code = 8


EXIT_CODES: dict[type[HanrtError], int] = {
    cls: cls.exit_code
    for cls in (
        HanrtError,
        UsageError,
        InputError,
        CheckpointError,
        OutputError,
        MissingDependencyError,
        ModelError,
        EngineMismatchError,
        ParityError,
        BackendError,
    )
}


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised like Ctrl-C (the ``hanrt`` command installs the handlers) so that
    every ``finally`` and ``except KeyboardInterrupt`` cleans up the same way. ``signum``: which
    signal; the command exits with 128 + signum (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: The signal that asked the ``hanrt`` command to stop (set by its handler, before it raises
#: :class:`Interrupted`), or ``None``.
stop_signal: int | None = None


def exit_code_for(exc: BaseException) -> int:
    """Exit code the CLI uses for ``exc`` (1 for anything that is not a HanrtError)."""
    if isinstance(exc, HanrtError):
        return exc.exit_code
    return 1


_EXTRA_FOR = {
    "torch": "export",
    "onnx": "export",
    "onnxslim": "export",
    "onnxruntime": "cpu",
    "tensorrt": "trt",
    "cuda": "trt",
    "av": "video",
    "cv2": "camera",
    "matplotlib": "bench",
    "modelopt": "export",
    "tritonclient": "triton",
    "pytriton": "serve",
    "spandrel": "export,spandrel",
}

_JETPACK_HINT = {
    "tensorrt": (" 'hanrt[trt]' is 'hanrt[trt-cu12]' (TensorRT for CUDA 12, NVIDIA driver R535 or newer); "
                 "'hanrt[trt-cu13]' is TensorRT for CUDA 13 (driver R580 or newer). On Jetson, TensorRT comes "
                 "with JetPack (apt package python3-libnvinfer); add cuda-python with pip (JetPack 6: "
                 "pip install 'cuda-python==12.6.2.post1')."),
}


def require(module: str, *, extra: str | None = None, purpose: str = ""):
    """Import an optional module or raise :class:`MissingDependencyError` naming the extra.

    ``module`` is the importable name (``"onnxruntime"``, ``"cv2"``); ``extra`` overrides the
    extra named in the message. Returns the imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # includes ModuleNotFoundError
        if stop_signal is not None:  # SIGINT/SIGTERM during an extension's initialization (which
            raise Interrupted(stop_signal) from None  # reports it as ImportError): a stop, not a missing package
        top = module.split(".")[0]
        ex = extra or _EXTRA_FOR.get(top, "dev")
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"{module!r} is needed{what} but cannot be imported ({exc}). "
            f"Install it with: pip install 'hanrt[{ex}]'.{_JETPACK_HINT.get(top, '')}"
        ) from exc
