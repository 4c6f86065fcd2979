"""Typed requests of hanrt_export's commands: the options, validated once, with their defaults in
one place (the command modules take their ``--help`` defaults from here). Torch-free.

- :class:`ExportRequest`: ``hanrt export --checkpoint`` (:func:`hanrt_export.cli.run_export`);
- :class:`TrainConfig`: ``hanrt train`` (:func:`hanrt_export.train.train`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ExportRequest", "TrainConfig"]


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """Export ``checkpoint`` to ``output`` (an ONNX graph); see ``hanrt export --help`` for each field.
    ``verify``: the ONNX Runtime vs PyTorch parity gate (``--no-verify`` turns it off)."""

    checkpoint: str
    output: str
    opset: int = 17
    io: Literal["float", "uint8"] = "float"
    csam: Literal["conv3d", "conv2d"] = "conv3d"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    calib: str | None = None
    int8_activations: Literal["int8", "uint8"] = "int8"
    calib_count: int = 16
    calib_size: int = 48
    # FP16: when the gate fails, decide again with the range limit / 4 (more nodes FP32), this many times
    fp16_retries: int = 0
    verify: bool = True
    overwrite: bool = False


#: ``TrainConfig.loss`` choices (``hanrt train --loss``); defined here, without torch, so the
#: command line can offer them before torch is imported (see train.pixel_loss).
LOSSES = ("l1", "mse", "charbonnier")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run (``hanrt train``; :func:`hanrt_export.train.train`)."""

    data: str
    output: str
    scale: int = 4
    n_resgroups: int = 2
    n_resblocks: int = 4
    n_feats: int = 32
    reduction: int = 8
    steps: int = 20000
    batch: int = 16
    patch: int = 48  # LR patch side; HR side is patch * scale
    lr: float = 5e-4
    lr_min: float = 1e-6
    warmup: int = 200
    val_every: int = 500
    save_every: int = 250
    val_fraction: float = 0.1
    shrink: tuple[float, float] = (0.25, 0.6)
    versions: int = 4
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    init: str | None = None
    # With ``init``: deepen every residual group to this many RCABs (identity-initialised, so the
    # grown model starts with exactly the init model's output); None keeps the init model's depth.
    grow_blocks: int | None = None
    resume: bool = False
    # Texture-biased sampling: an HR patch whose grey standard deviation (0..255) is below
    # ``flat_std`` is kept only with probability ``flat_keep`` (else another is drawn). Flat
    # patches (sky, walls) teach little that bicubic does not already do; 0 turns this off.
    flat_std: float = 0.0
    flat_keep: float = 0.25
    # Optional wall-clock budget (seconds, counting resumed time): the schedule follows the
    # fraction of the budget spent instead of the step count, and training stops when it is spent.
    time_budget_s: float | None = None
    # Training step arithmetic: "auto" measures each of PRECISION_MODES for a few steps of the
    # real model and batch at start and keeps the fastest (see train.choose_precision); or one of
    # them. Validation and saved weights are FP32 whatever this is.
    precision: str = "auto"
    # torch.compile of the training step's forward: "auto" times it against eager (on copies, after
    # compiling) for runs long enough to pay for compiling (train.COMPILE_MIN_RUN_S) and keeps it
    # if it is at least PRECISION_MIN_GAIN faster; "on" compiles without timing; "off" never.
    compile: str = "auto"
    # Optional folder of training *targets*, one per --data image with the same file name and
    # size: the model learns to turn the shrunken --data image into the target (restoration with
    # SR, e.g. a clean scan from a blurred, noisy one). None: the --data image is its own target.
    targets: str | None = None
    # Training loss on 0..255 pixels: "l1", "mse" or "charbonnier" (train.LOSSES).
    loss: str = "l1"
    # Share of the loss taken on luma (BT.601 Y, what the SR papers' PSNR measures) instead of on
    # R, G, B: loss = (1 - w) * loss(RGB) + w * loss(Y). 0 (default): RGB only; 1: luma only
    # (colour then learns nothing, so keep w < 1 unless fine-tuning briefly).
    luma_weight: float = 0.0
    # Exponential moving average of the weights (decay, e.g. 0.999; 0: none): when set, the average
    # is what is validated and saved as ``output`` (the resumable state keeps both).
    ema: float = 0.0
    # Distillation: a teacher model (a bundled name, .onnx, .pt or engine: whatever hanrt.Upscaler
    # opens) upscales every training image once, bicubic-shrunk by the scale as a whole, with a
    # ``teacher_ensemble``-pass self-ensemble; the target becomes ``teacher_weight`` x its output +
    # (1 - teacher_weight) x the true image (train.distill_images). Validation stays on the truth.
    teacher: str | None = None
    teacher_ensemble: int = 1
    teacher_weight: float = 1.0
    extra: dict = field(default_factory=dict)
