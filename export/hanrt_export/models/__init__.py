"""Model registry: which architecture a checkpoint holds, and how to load it for export.

Two loaders, tried in order by :func:`load_model`:

1. **HAN** (built in, the flagship): exact and strict as :mod:`hanrt_export.checkpoint` has always
   been: hanrt's own checkpoints and anything with HAN's layer/channel-spatial attention keys load
   through :func:`~hanrt_export.checkpoint.load_han` (hyperparameters from tensor shapes, missing,
   unexpected or mis-shaped keys refused).
2. **spandrel** (optional: ``pip install 'hanrt[export,spandrel]'``): every super-resolution
   architecture spandrel detects (Real-ESRGAN's RRDBNet and compact SRVGGNet, SwinIR, HAT, OmniSR,
   SPAN, DAT, RealCUGAN, RCAN, ...). Its model descriptor gives the scale, the channels and the size
   requirements (``minimum``, ``multiple_of``), which become :class:`~hanrt.model_info.ModelInfo`'s
   ``min_tile``/``tile_multiple``. spandrel's models take 0..1 input; the exporter wraps them so every
   hanrt graph reads and writes 0..255 (:func:`for_export`).

Refused with a clear message: checkpoints no loader recognises, spandrel architectures whose purpose
is not super-resolution (face restoration, inpainting, 1x restoration: hanrt's pipeline upscales),
scales outside :data:`SUPPORTED_SCALES`, and spandrel models whose input and output channels differ.

Checkpoints are always read by :func:`hanrt_export.checkpoint.read_state` (``torch.load(weights_only=True)``
or ``safetensors``): spandrel's own file reader is not used.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hanrt.errors import CheckpointError, MissingDependencyError

log = logging.getLogger(__name__)

__all__ = [
    "LoadedModel",
    "Loader",
    "LOADERS",
    "SUPPORTED_SCALES",
    "load_model",
    "load_state_dict",
    "for_export",
    "spandrel_available",
]

#: Scales hanrt exports (the tiler supports any integer; these are the ones SR models ship with).
SUPPORTED_SCALES = (2, 3, 4, 8)
#: Architectures whose compute is in convolutions: hanrt's INT8 pass (Q/DQ on Conv only) pays off.
INT8_ARCHS = frozenset({"HAN", "ESRGAN", "Compact", "RCAN", "SPAN", "RealCUGAN", "SwiftSRGAN", "PLKSR"})


@dataclass
class LoadedModel:
    """A model ready for export: an ``nn.Module`` in eval mode on the CPU, float32, and what it is.

    - ``model``: float32 **NCHW** RGB in, out; values in ``value_range`` (HAN: 0..rgb_range, normally
      0..255; spandrel models: 0..1). :func:`for_export` gives the 0..255 module the exporter traces.
    - ``arch``: architecture id (``"HAN"``, or spandrel's id: ``"ESRGAN"``, ``"SwinIR"``, ...).
    - ``scale``: output side = input side x scale. ``n_colors``: input = output channels.
    - ``min_tile``/``tile_multiple``: input sides must be >= ``min_tile`` and multiples of ``tile_multiple``.
    - ``int8``: ``""`` when hanrt's INT8 pass suits the architecture, else why not.
    """

    model: nn.Module
    arch: str
    scale: int
    n_colors: int = 3
    value_range: tuple[float, float] = (0.0, 255.0)
    min_tile: int = 1
    tile_multiple: int = 1
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    loader: str = "builtin"
    label: str = ""
    sha256: str = ""
    path: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    int8: str = ""
    config: Any = None  # HANConfig for HAN

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass(frozen=True)
class Loader:
    """One entry of the registry: ``claims(state_dict, meta)`` says whether this loader owns the
    checkpoint (it then loads it or raises :class:`CheckpointError`); ``load(sd, meta, source)``."""

    name: str
    claims: Callable[[Mapping[str, torch.Tensor], dict], bool]
    load: Callable[[Mapping[str, torch.Tensor], dict, str], LoadedModel]


# --- HAN ------------------------------------------------------------------------------------------

_HAN_MARKERS = ("la.gamma", "csa.conv.weight", "csa.gamma")


def _han_claims(sd: Mapping[str, torch.Tensor], meta: dict) -> bool:
    from ..checkpoint import HANRT_FORMAT

    return meta.get("format") == HANRT_FORMAT or any(k in sd for k in _HAN_MARKERS)


def _han_load(sd: Mapping[str, torch.Tensor], meta: dict, source: str, *, csam_conv2d: bool = False) -> LoadedModel:
    from ..checkpoint import han_config_from_meta, load_han

    cfg = han_config_from_meta(meta, source=source)
    model = load_han(sd, config=cfg, csam_conv2d=csam_conv2d, source=source)
    return han_loaded(model, meta=meta)


def han_loaded(model, *, meta: dict | None = None, sha256: str = "", path: str = "") -> LoadedModel:
    """Describe a HAN module as a :class:`LoadedModel` (no down-sampling inside: any tile size)."""
    c = model.config
    return LoadedModel(
        model=model.eval(), arch="HAN", scale=c.scale, n_colors=c.n_colors, value_range=(0.0, float(c.rgb_range)),
        hyperparameters=c.to_dict(), loader="builtin", label=f"HAN x{c.scale} ({c.n_resgroups}x{c.n_resblocks}x"
        f"{c.n_feats})", meta=dict(meta or {}), config=c, sha256=sha256, path=path,
    )


# --- spandrel -------------------------------------------------------------------------------------

def _import_spandrel():
    """Import spandrel or raise :class:`MissingDependencyError` naming the extra."""
    try:
        import spandrel
    except ImportError as exc:
        raise MissingDependencyError(
            f"loading architectures other than HAN needs spandrel, which cannot be imported ({exc}). "
            f"Install it with: pip install 'hanrt[export,spandrel]'."
        ) from exc
    except Exception as exc:  # spandrel imports torchvision, which fails on a torch build it does not match
        raise MissingDependencyError(
            f"spandrel is installed but cannot be imported ({type(exc).__name__}: {exc}); it imports "
            f"torchvision, which must match the installed torch build (pip install torchvision built for "
            f"torch {torch.__version__})."
        ) from exc
    return spandrel


def spandrel_available() -> str:
    """``""`` if spandrel imports here, else why not (for test skips and ``--help`` text)."""
    try:
        _import_spandrel()
    except MissingDependencyError as exc:
        return str(exc)
    return ""


def _spandrel_claims(sd: Mapping[str, torch.Tensor], meta: dict) -> bool:
    return True  # the last loader: tried for everything HAN did not claim


def _spandrel_load(sd: Mapping[str, torch.Tensor], meta: dict, source: str) -> LoadedModel:
    spandrel = _import_spandrel()
    try:
        with warnings.catch_warnings():
            # spandrel's window-attention models call torch.meshgrid without indexing= (torch warns)
            warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
            desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(dict(sd))
    except spandrel.UnsupportedModelError:
        from ..checkpoint import describe_unknown, strip_common_prefix

        raise CheckpointError(
            f"{source} holds no architecture hanrt can load: it is not HAN{describe_unknown(strip_common_prefix(sd))}, and "
            f"spandrel {spandrel.__version__} recognises none of its architectures in it."
        ) from None
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(
            f"{source}: spandrel detected an architecture but could not build it ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file is probably damaged or a variant spandrel does not support."
        ) from None
    arch = str(desc.architecture.id)
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.purpose != "SR":
        why = ("a 1x restoration model: it does not upscale" if getattr(desc, "purpose", "") == "Restoration"
               else f"its purpose is {getattr(desc, 'purpose', type(desc).__name__)!r}, not super-resolution")
        raise CheckpointError(
            f"{source} is {arch} ({desc.architecture.name}), {why}. hanrt exports super-resolution models "
            f"(scale {', '.join(map(str, SUPPORTED_SCALES))})."
        )
    if desc.scale not in SUPPORTED_SCALES:
        raise CheckpointError(
            f"{source} is {arch} x{desc.scale}; hanrt exports scales {', '.join(map(str, SUPPORTED_SCALES))}."
        )
    if desc.input_channels != desc.output_channels or desc.input_channels not in (1, 3):
        raise CheckpointError(
            f"{source} is {arch} with {desc.input_channels} input and {desc.output_channels} output channels; "
            f"hanrt runs RGB (3 -> 3) or grey (1 -> 1) models."
        )
    req = desc.size_requirements
    if getattr(req, "square", False):
        raise CheckpointError(f"{source} is {arch}, which needs square inputs; hanrt's tiler does not plan those.")
    mult = max(1, int(req.multiple_of))
    min_tile = max(1, int(req.minimum), mult)
    model = desc.model.float().eval()
    tags = list(desc.tags)
    return LoadedModel(
        model=model, arch=arch, scale=int(desc.scale), n_colors=int(desc.input_channels), value_range=(0.0, 1.0),
        min_tile=min_tile, tile_multiple=mult,
        hyperparameters={"spandrel": spandrel.__version__, "tags": tags, "tiling": desc.tiling.name.lower()},
        loader="spandrel", label=f"{arch} x{desc.scale}" + (f" ({', '.join(tags)})" if tags else ""), meta=meta,
        int8="" if arch in INT8_ARCHS else (
            f"{arch} computes mostly in attention MatMuls, which hanrt's INT8 pass (Q/DQ on convolutions "
            f"only) leaves in float: there is little to gain; export FP16 instead"),
    )


LOADERS: tuple[Loader, ...] = (
    Loader("HAN", _han_claims, _han_load),
    Loader("spandrel", _spandrel_claims, _spandrel_load),
)


def load_state_dict(sd: Mapping[str, torch.Tensor], *, meta: dict | None = None, source: str = "state dict",
                    csam_conv2d: bool = False) -> LoadedModel:
    """Pick the loader for ``sd`` (HAN first, then spandrel) and load it. See the module docstring."""
    from ..checkpoint import strip_common_prefix

    meta = dict(meta or {})
    stripped = strip_common_prefix(sd)  # HAN's layouts; spandrel canonicalises the keys itself
    for loader in LOADERS:
        if loader.name == "HAN":
            if loader.claims(stripped, meta):
                return _han_load(stripped, meta, source, csam_conv2d=csam_conv2d)
        elif loader.claims(sd, meta):
            try:
                return loader.load(sd, meta, source)
            except MissingDependencyError as exc:
                from ..checkpoint import describe_unknown

                raise CheckpointError(
                    f"{source} is not a HAN checkpoint{describe_unknown(stripped)}. {exc}"
                ) from exc
    raise CheckpointError(f"{source}: no loader claims it.")  # unreachable: spandrel claims everything


def load_model(path: str | os.PathLike, *, csam_conv2d: bool = False) -> LoadedModel:
    """Load any supported checkpoint file (``.pt``/``.pth``/``.ckpt`` through ``torch.load(weights_only=True)``,
    or ``.safetensors``) and detect its architecture. ``csam_conv2d`` applies to HAN only."""
    from hanrt.io.digest import sha256_file

    from ..checkpoint import read_state

    p = Path(path)
    sd, meta = read_state(p, strip_prefixes=False)
    loaded = load_state_dict(sd, meta=meta, source=f"checkpoint {str(p)!r}", csam_conv2d=csam_conv2d)
    loaded.sha256 = sha256_file(p)
    loaded.path = str(p)
    return loaded


class Range255(nn.Module):
    """Run a 0..1 model on 0..255 float NCHW: divide in, multiply out (inside the exported graph).

    The input is never modified in place (spandrel's RCAN scales its input with ``*=``)."""

    def __init__(self, model: nn.Module, peak: float) -> None:
        super().__init__()
        self.model = model
        self.peak = float(peak)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * (1.0 / self.peak)) * self.peak


def for_export(loaded: LoadedModel) -> nn.Module:
    """The module hanrt exports: float32 NCHW with the model's native range, except that 0..1 models
    are wrapped to read and write 0..255 like every hanrt graph (the runtime feeds 0..255)."""
    if loaded.arch == "HAN" or loaded.value_range[1] == 255.0:
        return loaded.model.eval()
    return Range255(loaded.model, 255.0 / loaded.value_range[1]).eval()
