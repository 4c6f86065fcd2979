"""hanrt: an optimized deployment runtime for the HAN super-resolution network.

The core (this package) needs only numpy and Pillow; each backend comes with an extra
(``pip install 'hanrt[cpu]'`` for ONNX Runtime on the CPU, ``[gpu]``, ``[trt]``, ``[video]``,
``[camera]``). Errors derive from :class:`hanrt.errors.HanrtError`.
"""

__version__ = "0.1.0"

from .errors import HanrtError  # noqa: E402
from .model_info import ModelInfo  # noqa: E402

__all__ = ["__version__", "HanrtError", "ModelInfo", "Upscaler"]


def __getattr__(name: str):
    # ``hanrt.Upscaler`` without importing the backends machinery on ``import hanrt``.
    if name == "Upscaler":
        from .upscaler import Upscaler

        return Upscaler
    raise AttributeError(f"module 'hanrt' has no attribute {name!r}")
