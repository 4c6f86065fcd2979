"""HAN's hyperparameters as plain data (no torch): :mod:`hanrt_export.han` builds the network from
them, the benchmarks count its multiply-adds from them (:mod:`hanrt_bench.flops`), and
``ModelInfo.hyperparameters`` records them (:meth:`HANConfig.to_dict` / :meth:`HANConfig.from_dict`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

__all__ = ["HANConfig", "SUPPORTED_SCALES", "FULL_HAN_X4"]

SUPPORTED_SCALES = (2, 3, 4, 8)


@dataclass(frozen=True)
class HANConfig:
    """HAN hyperparameters (official defaults: 10 groups x 20 blocks x 64 features, r=16)."""

    scale: int = 4
    n_resgroups: int = 10
    n_resblocks: int = 20
    n_feats: int = 64
    reduction: int = 16
    rgb_range: float = 255.0
    n_colors: int = 3

    def __post_init__(self) -> None:
        if self.scale not in SUPPORTED_SCALES:
            raise ValueError(f"HAN scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        for name in ("n_resgroups", "n_resblocks", "n_feats", "reduction", "n_colors"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"HAN {name} must be >= 1, got {getattr(self, name)}")
        if self.n_feats // self.reduction < 1:
            raise ValueError(
                f"n_feats ({self.n_feats}) // reduction ({self.reduction}) must be >= 1"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rgb_range"] = float(d["rgb_range"])
        return d

    @property
    def n_params_hint(self) -> str:
        return f"{self.n_resgroups}x{self.n_resblocks}x{self.n_feats}"


    @property
    def label(self) -> str:
        return f"HAN x{self.scale} {self.n_params_hint}"

    @classmethod
    def from_dict(cls, hp: Mapping[str, Any]) -> "HANConfig":
        """From :meth:`to_dict` or ``ModelInfo.hyperparameters`` (absent keys: the defaults; others ignored)."""
        types = {f.name: f.type for f in fields(cls)}
        return cls(**{k: (float if types[k] in (float, "float") else int)(v) for k, v in hp.items() if k in types})


#: The official full HAN x4 (10 groups x 20 blocks x 64 features).
FULL_HAN_X4 = HANConfig()
