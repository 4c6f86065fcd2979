"""Strict, safe loading of HAN checkpoints (official ``HAN_BIX{2,3,4,8}.pt`` and hanrt's own).

Checkpoints are data, not code: files are read with ``torch.load(weights_only=True)``, so a pickle
that carries code is refused. Hyperparameters are derived from tensor shapes, and a state dict
with missing, unexpected or mis-shaped keys is refused with the keys named (the official code's
``strict=False`` silently half-loads an RCAN checkpoint or a wrong-scale upsampler; we do not).

Accepted layouts: a plain state dict; keys prefixed ``module.`` (DataParallel) or ``model.``;
``{'state_dict': ...}`` / ``{'model': ...}`` / ``{'params': ...}`` wrappers. hanrt's own checkpoints are
``{'format': 'hanrt-han', 'config': {...}, 'state_dict': {...}, ...}`` and record their
hyperparameters, which must agree with the shapes.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hanrt.io.digest import sha256_file
from hanrt.errors import CheckpointError
from hanrt.io.atomic import atomic_output

from .han import HAN, HANConfig, SUPPORTED_SCALES

__all__ = [
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_han",
    "infer_config",
    "unwrap_state_dict",
    "save_checkpoint",
    "sha256_file",
    "read_state",
    "han_config_from_meta",
    "describe_unknown",
]

HANRT_FORMAT = "hanrt-han"
_WRAPPER_KEYS = ("state_dict", "model", "params", "params_ema", "net")


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint: the model (eval mode, CPU), its config, and where it came from."""

    model: HAN
    config: HANConfig
    sha256: str
    path: str
    meta: dict[str, Any] = field(default_factory=dict)


def _read_file(path: Path) -> Any:
    _read_file_checks(path)
    try:
        with warnings.catch_warnings():
            # torch warns about legacy pickle protocols before refusing or reading them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "weights_only" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains Python objects or code beyond tensors and was "
                f"refused (hanrt loads checkpoints with weights_only=True). Re-save it as a plain "
                f"state dict: torch.save(model.state_dict(), 'clean.pt') in a trusted environment."
            ) from None
        raise CheckpointError(
            f"{str(path)!r} is not a PyTorch checkpoint or is corrupt ({_short(msg)})."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        msg = str(exc)
        hint = "it is truncated or not a PyTorch checkpoint"
        if "zip archive" in msg or "central directory" in msg or isinstance(exc, EOFError):
            hint = "it is truncated or corrupt (re-download it)"
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: {hint} ({_short(msg)})."
        ) from None


def _short(msg: str, n: int = 160) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def unwrap_state_dict(obj: Any, *, source: str = "checkpoint",
                      strip_prefixes: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Return ``(state_dict, meta)`` from any accepted checkpoint layout.

    ``meta`` holds hanrt's recorded fields (``config`` etc.) when present. ``strip_prefixes``: drop a
    ``module.``/``model.`` prefix shared by every key (HAN's layouts; spandrel gets the keys as they
    are, since some architectures' own names start with ``model.``).
    """
    meta: dict = {}
    if isinstance(obj, Mapping) and obj.get("format") == HANRT_FORMAT:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj.get("state_dict")
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            for key in _WRAPPER_KEYS:
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{source} holds no state dict (found {type(obj).__name__}); expected a mapping of "
            f"parameter names to tensors."
        )
    if not _is_tensor_dict(obj):
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
        raise CheckpointError(f"{source} is not a state dict of tensors (non-tensor entries: {bad}).")
    sd = dict(obj)
    return (strip_common_prefix(sd) if strip_prefixes else sd), meta


def strip_common_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` without a ``module.`` (DataParallel) or ``model.`` prefix shared by every key."""
    sd = dict(sd)
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _is_tensor_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


_RE_GROUP = re.compile(r"^body\.(\d+)\.body\.(\d+)\.body\.0\.weight$")


def infer_config(sd: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> HANConfig:
    """Derive HAN hyperparameters from state-dict shapes; raise CheckpointError if not HAN."""
    needed = ["head.0.weight", "la.gamma", "csa.conv.weight", "last_conv.weight", "tail.0.0.weight"]
    missing = [k for k in needed if k not in sd]
    if missing:
        arch = _guess_arch(sd)
        raise CheckpointError(
            f"{source} is not a HAN checkpoint{arch}: it lacks {', '.join(missing)}. hanrt loads "
            f"HAN weights (official HAN_BIX2/3/4/8.pt or hanrt's own)."
        )
    head = sd["head.0.weight"]
    n_feats, n_colors = int(head.shape[0]), int(head.shape[1])
    # Body: n_resgroups groups (body.i.body.j...) plus one conv at body.<n_resgroups>.
    groups: dict[int, set[int]] = {}
    for k in sd:
        m = _RE_GROUP.match(k)
        if m:
            groups.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    n_resgroups = len(groups)
    if n_resgroups == 0 or sorted(groups) != list(range(n_resgroups)):
        raise CheckpointError(f"{source}: residual groups are not numbered 0..N-1 ({sorted(groups)}).")
    n_resblocks = len(groups[0])
    du = sd.get("body.0.body.0.body.3.conv_du.0.weight")
    if du is None:
        raise CheckpointError(f"{source}: no channel-attention weights (body.0.body.0.body.3.conv_du.0.weight).")
    reduction = max(1, n_feats // int(du.shape[0]))
    # Scale from the upsampler: k convs of 4*F (2^k) or one conv of 9*F (x3).
    ups = []
    i = 0
    while f"tail.0.{i}.weight" in sd:
        ups.append(int(sd[f"tail.0.{i}.weight"].shape[0]))
        i += 2
    if ups and all(c == 4 * n_feats for c in ups):
        scale = 2 ** len(ups)
    elif ups == [9 * n_feats]:
        scale = 3
    else:
        raise CheckpointError(f"{source}: cannot read the scale from the upsampler shapes {ups} (n_feats {n_feats}).")
    if scale not in SUPPORTED_SCALES:
        raise CheckpointError(f"{source}: scale x{scale} is not supported (supported: {SUPPORTED_SCALES}).")
    rgb_range = 255.0
    mb = sd.get("sub_mean.bias")
    if mb is not None and n_colors == 3 and abs(float(mb[0])) > 0:
        # bias = -rgb_range * mean / std (std 1): recover rgb_range (1 or 255 in practice).
        est = abs(float(mb[0])) / 0.4488
        rgb_range = 1.0 if est < 10 else 255.0
    return HANConfig(
        scale=scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
        reduction=reduction, rgb_range=rgb_range, n_colors=n_colors,
    )


def describe_unknown(sd: Mapping[str, torch.Tensor]) -> str:
    """`` (it looks like X)`` for a state dict that is not HAN, or ``""``."""
    return _guess_arch(sd)


def _guess_arch(sd: Mapping[str, torch.Tensor]) -> str:
    keys = set(sd)
    if "head.0.weight" in keys and any(k.startswith("body.") for k in keys) and "la.gamma" not in keys:
        return " (it looks like RCAN: no layer attention 'la' or 'csa' keys)"
    if any(k.startswith(("conv_first", "RRDB_trunk", "body.0.rdb")) for k in keys):
        return " (it looks like ESRGAN/RRDBNet)"
    if any(k.startswith("layers.") for k in keys) and "patch_embed.proj.weight" in keys:
        return " (it looks like SwinIR)"
    return ""


def _strict_load(model: HAN, sd: Mapping[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape_bad = [
        f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}"
        for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_list(unexpected)}")
    if shape_bad:
        problems.append(f"shape mismatches ({len(shape_bad)}): {_list(shape_bad)}")
    if problems:
        raise CheckpointError(
            f"{source} does not match HAN {model.config.n_params_hint} x{model.config.scale}: "
            + "; ".join(problems) + ". Nothing was loaded."
        )
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(sd[k].to(t.dtype))


def _list(items: list[str], n: int = 6) -> str:
    s = ", ".join(items[:n])
    return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def load_han(
    sd: Mapping[str, torch.Tensor],
    *,
    config: HANConfig | None = None,
    csam_conv2d: bool = False,
    source: str = "state dict",
) -> HAN:
    """Build a HAN from a state dict, strictly. ``config`` (if given) must agree with the shapes."""
    derived = infer_config(sd, source=source)
    if config is not None:
        c = config.to_dict()
        d = derived.to_dict()
        diff = {k: (c[k], d[k]) for k in ("scale", "n_resgroups", "n_resblocks", "n_feats", "n_colors") if c[k] != d[k]}
        if diff:
            raise CheckpointError(
                f"{source}: recorded hyperparameters disagree with the tensor shapes "
                f"(recorded, found): {diff}."
            )
        derived = HANConfig(**{**d, "reduction": c["reduction"], "rgb_range": c["rgb_range"]})
    model = HAN.from_config(derived, csam_conv2d=csam_conv2d)
    _strict_load(model, sd, source)
    return model.eval()


def load_checkpoint(path: str | os.PathLike, *, csam_conv2d: bool = False) -> LoadedCheckpoint:
    """Load a HAN checkpoint file strictly and safely; see the module docstring for layouts."""
    p = Path(path)
    sd, meta = read_state(p)
    cfg = han_config_from_meta(meta, source=f"checkpoint {str(p)!r}")
    model = load_han(sd, config=cfg, csam_conv2d=csam_conv2d, source=f"checkpoint {str(p)!r}")
    return LoadedCheckpoint(model=model, config=model.config, sha256=sha256_file(p), path=str(p), meta=meta)


def read_state(path: str | os.PathLike, *, strip_prefixes: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint file safely and return ``(state_dict, meta)`` (any accepted layout).

    ``.safetensors`` files are read with ``safetensors.torch.load_file`` (tensors only, no code);
    everything else with ``torch.load(weights_only=True)``. Used by every loader of
    :mod:`hanrt_export.models`.
    """
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        _read_file_checks(p)
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointError(
                f"{str(p)!r} is a safetensors file; reading it needs safetensors: pip install "
                f"'hanrt[export,spandrel]'.") from exc
        try:
            obj = load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError for damaged files
            raise CheckpointError(f"cannot read {str(p)!r} as safetensors ({_short(str(exc))}).") from None
    else:
        obj = _read_file(p)
    return unwrap_state_dict(obj, source=f"checkpoint {str(p)!r}", strip_prefixes=strip_prefixes)


def _read_file_checks(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist: check the path.")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): re-download or re-save it.")


def han_config_from_meta(meta: Mapping[str, Any], *, source: str) -> HANConfig | None:
    """The HANConfig a hanrt checkpoint records (``None`` when it records none)."""
    if "config" not in meta:
        return None
    try:
        return HANConfig(**meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source} records an invalid config: {exc}") from None


def save_checkpoint(model: HAN, path: str | os.PathLike, **extra: Any) -> None:
    """Save hanrt's checkpoint format (hyperparameters recorded), atomically.

    ``extra`` values must be plain data (numbers, strings, lists, dicts, tensors) so the file
    still loads with ``weights_only=True``.
    """
    p = Path(path)
    obj = {"format": HANRT_FORMAT, "config": model.config.to_dict(), **extra,
           # contiguous_format: a model trained channels-last still saves plain NCHW tensors
           "state_dict": {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
                          for k, v in model.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_output(p) as tmp:
        tmp.write_bytes(buf.getbuffer())
