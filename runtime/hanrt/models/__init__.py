"""The models bundled with hanrt, by name: the one place that maps a name to its files.

``photo`` (the default) is ``hanrt_x4``, trained on photos; ``art`` is ``hanrt_x4_art``, grown
deeper from it and trained on photos, line art and screenshot-like images (for comics, drawings and
screenshots; slower per pixel); ``document`` is ``hanrt_x4_document``, fine-tuned from the photo
model on generated document pages and trained to restore as it enlarges (sharper, without the
scanner's blur, noise and JPEG; for scans that are then binarized or read). Every command that takes ``--model`` and :class:`hanrt.Upscaler` accept these
names as well as a path (a file literally called ``photo`` is reached as ``./photo``).

Stdlib only (tier 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ModelError

__all__ = ["BundledModel", "BUNDLED", "DEFAULT_MODEL_NAME", "bundled_dir", "bundled_path", "resolve_model"]


@dataclass(frozen=True)
class BundledModel:
    name: str
    stem: str  # file stem: STEM.onnx, STEM_uint8.onnx, STEM_fp16.onnx, STEM_int8.onnx, STEM.pt
    card: str  # model card (markdown) in the models folder
    notice: str  # training-data credits and licences
    summary: str


BUNDLED: dict[str, BundledModel] = {
    "photo": BundledModel("photo", "hanrt_x4", "MODEL_CARD.md", "NOTICE",
                          "photos (default): trained on CC-BY/CC0 photos"),
    "art": BundledModel("art", "hanrt_x4_art", "MODEL_CARD_art.md", "NOTICE_art",
                        "line art, comics, screenshots (and photos): 2x16x32, trained on all three kinds"),
    "document": BundledModel("document", "hanrt_x4_document", "MODEL_CARD_document.md", "NOTICE_document",
                             "document scans: 2x16x32, fine-tuned from photo on generated pages (text on paper); restores blur, noise, JPEG"),
}
DEFAULT_MODEL_NAME = "photo"

#: graph / weight variant -> file suffix after the stem
_VARIANTS = {"float": ".onnx", "uint8": "_uint8.onnx", "fp16": "_fp16.onnx", "int8": "_int8.onnx", "pt": ".pt"}


def bundled_dir() -> Path:
    """The folder that holds the bundled models (``hanrt/models``)."""
    try:
        return Path(str(resources.files("hanrt") / "models"))
    except (ModuleNotFoundError, TypeError) as exc:  # pragma: no cover - broken install
        raise ModelError(f"cannot locate hanrt's bundled models ({exc}).") from None


def bundled_path(name: str = DEFAULT_MODEL_NAME, variant: str = "float") -> Path:
    """Path of a bundled model's file; ModelError if the name is unknown or the file missing.

    ``variant``: ``float`` (float32 NCHW graph), ``uint8`` (uint8 NHWC graph), ``fp16``, ``int8``
    or ``pt`` (PyTorch weights).
    """
    if name not in BUNDLED:
        raise ModelError(f"no bundled model named {name!r}; bundled: {', '.join(BUNDLED)}.")
    if variant not in _VARIANTS:
        raise ModelError(f"unknown model variant {variant!r}; one of {', '.join(_VARIANTS)}.")
    m = BUNDLED[name]
    p = bundled_dir() / (m.stem + _VARIANTS[variant])
    if not p.is_file():
        raise ModelError(
            f"the bundled {name} model ({p.name}) is not installed (looked for {str(p)!r}). Pass a model "
            f"file instead (--model model.onnx / Upscaler('model.onnx')), or export one with: "
            f"hanrt export --checkpoint CKPT.pt --output {p.name}")
    return p


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The file for ``model``: ``None`` -> the default bundled model, a bundled name (``photo``,
    ``art``, ``document``) -> its float graph, anything else -> that path (whether it exists is checked
    by whoever opens it)."""
    if model is None:
        return bundled_path(DEFAULT_MODEL_NAME)
    if isinstance(model, str) and model in BUNDLED:
        return bundled_path(model)
    return Path(model)
