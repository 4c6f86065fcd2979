"""hanrt_export: the HAN network in PyTorch, strict checkpoint loading, ONNX export with a parity
gate, precision passes and training. Host side: needs torch and onnx (``pip install 'hanrt[export]'``)."""

from hanrt import __version__

__all__ = ["__version__"]
