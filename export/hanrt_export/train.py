"""Train or fine-tune HAN on a folder of photos (``hanrt train``).

Recipe: HR patches cut from photos that are first shrunk by a random factor (removes JPEG noise
and camera blur, so the model learns detail rather than artefacts), LR made from each HR patch
by Pillow bicubic (the same degradation as the evaluation protocol), random flips and 90-degree
rotations, L1 loss on the 0..255 scale (``--loss``: MSE or Charbonnier instead), Adam, linear
warm-up then cosine decay of the learning rate; optionally (``--ema``) an exponential moving
average of the weights is kept, validated and saved instead of the last step's weights; optionally
(``--teacher``) a teacher model's output, e.g. a model's own self-ensemble, is (part of) the
target: distillation (:func:`distill_images`). A strip
at the bottom of every photo (``val_fraction``) is never sampled for training and provides the validation PSNR (Y channel, papers' protocol) printed every ``val_every`` steps.

Checkpoints (hanrt format, hyperparameters recorded, loadable with ``weights_only=True``) carry
the optimizer and step so ``--resume`` continues exactly; ``--init`` starts from any HAN
checkpoint (official weights too) for fine-tuning on a user's own images.
"""

from __future__ import annotations

import io
import logging
import math
import os
import queue
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hanrt.errors import HanrtError, InputError, UsageError
from hanrt.io.images import IMAGE_SUFFIXES, list_images
from hanrt.tiling import LUMA_WEIGHTS

from .checkpoint import load_checkpoint, save_checkpoint
from .han import HAN
from .requests import LOSSES, TrainConfig

log = logging.getLogger(__name__)


__all__ = ["TrainConfig", "train", "PatchSampler", "find_images", "grow_blocks", "PRECISION_MODES",
           "choose_precision", "probe_precision",
           "probe_compile", "COMPILE_MODES", "COMPILE_MIN_RUN_S", "LOSSES", "pixel_loss", "to_luma",
           "make_ema", "distill_images"]


def find_images(folder: str | os.PathLike) -> list[Path]:
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"training data {str(p)!r} is not a folder of images.")
    files = list_images(p, recursive=True)
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {str(p)!r}.")
    return files


def find_targets(files: list[Path], folder: str | os.PathLike) -> list[Path]:
    """The target of every training image: the file of the same name in ``folder``; an
    InputError names the missing ones."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--targets {str(folder)!r} is not a folder; give the folder of target images.")
    out = [folder / f.name for f in files]
    missing = [p.name for p in out if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} training image(s) have no target of the same name in {str(folder)!r} "
                         f"(e.g. {', '.join(missing[:3])}); every --data image needs one.")
    return out


def _open_rgb(f: Path) -> Image.Image:
    try:
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.load()
    except Exception as exc:  # noqa: BLE001 - any decoder error means a bad file
        raise InputError(f"cannot read training image {str(f)!r}: {exc}") from None
    return im


def split_pair(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) of a sampler image: a 6-channel array holds a source and its target side
    by side in channels; a 3-channel one is its own target."""
    if a.shape[-1] == 6:
        return a[..., :3], a[..., 3:]
    return a, a


def _check_teacher_weight(w: float) -> None:
    if not 0.0 <= w <= 1.0:
        raise UsageError(f"--teacher-weight {w}: give the teacher's share of the target, within 0..1.")


def distill_images(imgs: list[np.ndarray], teacher: Callable[[np.ndarray], np.ndarray], scale: int,
                   weight: float = 1.0) -> list[np.ndarray]:
    """Sampler images (:func:`split_pair`'s 3 or 6 channels) whose target is ``weight`` x the
    teacher's upscale + (1 - ``weight``) x the true target, rounded to uint8, as 6 channels.

    The teacher sees each image shrunk by ``scale`` with Pillow bicubic *as a whole* (so its output
    has the context of the whole image, not of a patch; the patches' own LR is made the same way,
    from the patch), after trimming the image to multiples of ``scale`` (at most ``scale - 1``
    rows and columns). ``teacher``: uint8 HxWx3 LR -> HR of ``scale`` x its size (e.g. an
    :class:`hanrt.Upscaler`'s ``upscale``, whose ``ensemble`` makes it a self-ensemble)."""
    _check_teacher_weight(weight)
    out = []
    for a in imgs:
        src, truth = split_pair(a)
        h, w = src.shape[0] // scale * scale, src.shape[1] // scale * scale
        src, truth = np.ascontiguousarray(src[:h, :w]), truth[:h, :w]
        lr = np.asarray(Image.fromarray(src).resize((w // scale, h // scale), Image.BICUBIC))
        t = np.asarray(teacher(lr))
        if t.shape != truth.shape:
            raise UsageError(f"the teacher turned a {lr.shape[1]}x{lr.shape[0]} image into {t.shape[1]}x{t.shape[0]}, "
                             f"not {w}x{h}: give a teacher of the trained scale (x{scale}).")
        mix = weight * t.astype(np.float32) + (1.0 - weight) * truth.astype(np.float32)
        out.append(np.concatenate([src, np.clip(np.rint(mix), 0, 255).astype(np.uint8)], axis=2))
    return out


class PatchSampler:
    """Random (LR, HR) patch batches from shrunken photos; uint8 work in a background thread.

    Each photo is shrunk ``versions`` times by factors drawn from ``shrink`` (from ``seed``, so
    a resumed run validates on the same images); the bottom ``val_fraction`` of every shrunken
    image is reserved for validation. ``stream_seed`` seeds the patch draws separately.

    With ``targets`` (one per file, same size), the LR patch is made from the file and the HR
    patch is cut from its target at the same place (same shrink, flips and rotation): the model
    learns restoration along with SR. Such images are kept as 6 channels (:func:`split_pair`).
    With ``teacher``, the training images' targets are remade by :func:`distill_images` (once,
    before sampling starts) and patches are cut at multiples of ``scale``, so each LR patch is
    (up to its border) a piece of the LR image the teacher saw; validation images keep the truth.
    """

    def __init__(self, files: list[Path], *, scale: int, patch: int, batch: int,
                 shrink: tuple[float, float], versions: int, val_fraction: float, seed: int,
                 flat_std: float = TrainConfig.flat_std, flat_keep: float = TrainConfig.flat_keep,
                 stream_seed: int | None = None, targets: list[Path] | None = None,
                 teacher: Callable[[np.ndarray], np.ndarray] | None = None, teacher_weight: float = 1.0) -> None:
        if not 0.0 <= flat_keep <= 1.0:
            raise UsageError(f"flat_keep must be within 0..1, got {flat_keep}.")
        self.scale, self.patch, self.batch = scale, patch, batch
        self.flat_std, self.flat_keep = float(flat_std), float(flat_keep)
        self.flat_seen = self.flat_dropped = 0
        self.rng = np.random.default_rng(seed)
        hp = patch * scale
        self.train_imgs: list[np.ndarray] = []
        self.val_imgs: list[np.ndarray] = []
        if targets is not None and len(targets) != len(files):
            raise UsageError(f"{len(files)} training images but {len(targets)} targets.")
        for i, f in enumerate(files):
            im = _open_rgb(f)
            tg = None
            if targets is not None:
                tg = _open_rgb(targets[i])
                if tg.size != im.size:
                    raise InputError(f"target {str(targets[i])!r} is {tg.width}x{tg.height} but its training image "
                                     f"{str(f)!r} is {im.width}x{im.height}; a target must match its image's size.")
            for _ in range(versions):
                fac = float(self.rng.uniform(*shrink))
                w, h = max(1, round(im.width * fac)), max(1, round(im.height * fac))
                a = np.asarray(im.resize((w, h), Image.BICUBIC, reducing_gap=3.0))
                if tg is not None:
                    a = np.concatenate([a, np.asarray(tg.resize((w, h), Image.BICUBIC, reducing_gap=3.0))], axis=2)
                cut = int(round(h * (1 - val_fraction)))
                if cut >= hp and w >= hp:
                    self.train_imgs.append(a[:cut])
                if h - cut >= 4 * scale and val_fraction > 0:
                    self.val_imgs.append(a[cut:])
        if not self.train_imgs:
            raise InputError(f"training images are too small for {hp}x{hp} HR patches.")
        self.aligned = teacher is not None
        if teacher is not None:
            t0 = time.perf_counter()
            self.train_imgs = distill_images(self.train_imgs, teacher, scale, teacher_weight)
            self.teacher_s = time.perf_counter() - t0
        if stream_seed is not None:  # the patch stream moves on (e.g. after --resume); the split stays
            self.rng = np.random.default_rng(stream_seed)
        areas = np.array([a.shape[0] * a.shape[1] for a in self.train_imgs], dtype=np.float64)
        self.p = areas / areas.sum()
        self._q: queue.Queue = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _crop(self) -> np.ndarray:
        hp = self.patch * self.scale
        img = self.train_imgs[self.rng.choice(len(self.train_imgs), p=self.p)]
        if self.aligned:  # on the teacher's pixel grid: the patch's LR is the LR the teacher saw
            s = self.scale
            y = s * int(self.rng.integers(0, (img.shape[0] - hp) // s + 1))
            x = s * int(self.rng.integers(0, (img.shape[1] - hp) // s + 1))
        else:
            y = int(self.rng.integers(0, img.shape[0] - hp + 1))
            x = int(self.rng.integers(0, img.shape[1] - hp + 1))
        return img[y:y + hp, x:x + hp]

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        hr = self._crop()
        # Bounded retries, so a folder of flat images still trains (on flat patches).
        for _ in range(16):
            if self.flat_std <= 0 or patch_std(split_pair(hr)[1]) >= self.flat_std:
                break
            self.flat_seen += 1
            if self.rng.random() < self.flat_keep:
                break
            self.flat_dropped += 1
            hr = self._crop()
        k = int(self.rng.integers(0, 8))
        if k & 1:
            hr = hr[:, ::-1]
        if k & 2:
            hr = hr[::-1]
        if k & 4:
            hr = hr.transpose(1, 0, 2)
        src, hr = split_pair(hr)
        hr = np.ascontiguousarray(hr)
        lr = np.asarray(Image.fromarray(np.ascontiguousarray(src)).resize((self.patch, self.patch), Image.BICUBIC))
        return lr, hr

    def _make(self) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self._one() for _ in range(self.batch)]
        lr = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float()
        hr = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2).float()
        return lr, hr

    def _fill(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._make()
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                item = exc
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        item = self._q.get()
        if isinstance(item, BaseException):
            self._stop.set()
            raise item
        return item

    def close(self) -> None:
        """Stop the background thread and wait for it (it checks every 0.2 s), so the sampler's
        random generator has one user again."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


def patch_std(rgb: np.ndarray) -> float:
    """Standard deviation of a uint8 RGB patch's luma (BT.601 weights, 0..255)."""
    wr, wg, wb = LUMA_WEIGHTS
    grey = rgb[..., 0] * wr + rgb[..., 1] * wg + rgb[..., 2] * wb
    return float(grey.std())


def grow_blocks(model: HAN, n_resblocks: int) -> HAN:
    """Return ``model`` deepened to ``n_resblocks`` RCABs per residual group, same function.

    The trained blocks keep their places; the new ones follow them (before each group's closing
    conv) with their second conv set to zero, so each new block starts as the identity and the
    grown model's output equals the original's exactly. Training then puts the new capacity to
    use without first having to relearn what the smaller model knew.
    """
    old = model.config
    if n_resblocks < old.n_resblocks:
        raise UsageError(f"cannot grow {old.n_params_hint} to {n_resblocks} blocks per group: "
                         f"that is fewer than it has.")
    if n_resblocks == old.n_resblocks:
        return model
    from dataclasses import replace

    new = HAN.from_config(replace(old, n_resblocks=n_resblocks))
    src = model.state_dict()
    dst = new.state_dict()
    for k in dst:
        parts = k.split(".")
        in_group = (parts[0] == "body" and parts[1].isdigit() and int(parts[1]) < old.n_resgroups
                    and parts[2] == "body")
        if not in_group:
            dst[k] = src[k].clone()
            continue
        b = int(parts[3])
        if b == n_resblocks:  # the group's closing conv moved down
            dst[k] = src[".".join(parts[:3] + [str(old.n_resblocks)] + parts[4:])].clone()
        elif b < old.n_resblocks:
            dst[k] = src[k].clone()
        elif parts[4:6] == ["body", "2"]:  # a new block's second conv: zero, so the block is x + 0
            dst[k] = torch.zeros_like(dst[k])
    new.load_state_dict(dst, strict=True)
    return new


#: Arithmetic of a training step: memory format (NCHW or channels-last) x FP32 or BF16 autocast.
PRECISION_MODES = ("fp32", "channels_last", "bf16", "channels_last+bf16")
#: A mode other than fp32 is kept only if its median step is at least this much faster than fp32
#: (BF16 changes the numerics; a gain inside the timing noise is not worth that).
PRECISION_MIN_GAIN = 0.10
#: The precision probe stops timing a mode whose first timed step took more than this many times
#: the fastest mode's (it reports that one step): it cannot be chosen, and on CPUs without native
#: BF16 its steps cost minutes.
PROBE_DROP_FACTOR = 3.0


def choose_precision(step_s: dict[str, float], *, min_gain: float = PRECISION_MIN_GAIN) -> str:
    """The mode to train with, from measured seconds per step (``{mode: seconds}``).

    The fastest mode, if it beats ``fp32`` by at least ``min_gain`` (a fraction); ``fp32``
    otherwise, and whenever fp32 itself was not measured or a figure is not a positive number.
    """
    base = step_s.get("fp32")
    if not base or not math.isfinite(base) or base <= 0:
        return "fp32"
    ok = {m: t for m, t in step_s.items() if m in PRECISION_MODES and math.isfinite(t) and t > 0}
    best = min(ok, key=ok.get)
    return best if ok[best] <= base * (1 - min_gain) else "fp32"


def _set_format(model: torch.nn.Module, channels_last: bool) -> None:
    """Put the model's 4-D parameters (conv weights) in channels-last or plain NCHW memory order,
    in place (the layer-attention Conv3d and the 1-D scalars are left alone)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=fmt)


def _autocast(mode: str, device: str):
    dev = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(dev, dtype=torch.bfloat16, enabled="bf16" in mode)


# The ``--loss`` choices (requests.LOSSES), on 0..255 pixels: ``l1`` (the SR papers' usual loss;
# robust while a model is far from converged), ``mse`` (what PSNR measures: a short MSE stage after
# L1 training is a common last step for a PSNR-oriented model), ``charbonnier`` (a smooth L1).

#: Charbonnier's epsilon on the 0..255 scale (1e-3 on the 0..1 scale, as in LapSRN).
CHARBONNIER_EPS = 0.255


def _elementwise_loss(out: torch.Tensor, hr: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(out, hr)
    if kind == "mse":
        return F.mse_loss(out, hr)
    if kind == "charbonnier":
        return torch.sqrt((out - hr) ** 2 + CHARBONNIER_EPS ** 2).mean()
    raise UsageError(f"--loss {kind!r}: choose one of {', '.join(LOSSES)}.")


def _check_luma_weight(w: float) -> None:
    if not 0.0 <= w <= 1.0:
        raise UsageError(f"--luma-weight {w}: give a share between 0 (RGB only, the default) and 1 (luma only).")


def to_luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an N x 3 x H x W batch on 0..255: N x 1 x H x W. It is the Y of the SR papers'
    PSNR (hanrt_bench.quality.rgb_to_y) without its +16 offset, which cancels in a difference."""
    from hanrt_bench.quality import Y_WEIGHTS

    w = torch.tensor(Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def pixel_loss(out: torch.Tensor, hr: torch.Tensor, kind: str = "l1", luma_weight: float = 0.0) -> torch.Tensor:
    """The training loss ``kind`` (one of :data:`LOSSES`) of ``out`` against ``hr`` (0..255), on
    R, G, B, or with ``luma_weight`` w > 0: ``(1 - w) * loss(RGB) + w * loss(Y)`` (BT.601 luma)."""
    _check_luma_weight(luma_weight)
    if luma_weight == 0.0:
        return _elementwise_loss(out, hr, kind)
    luma = _elementwise_loss(to_luma(out), to_luma(hr), kind)
    if luma_weight == 1.0:
        return luma
    return (1.0 - luma_weight) * _elementwise_loss(out, hr, kind) + luma_weight * luma


def make_ema(model: torch.nn.Module, decay: float):
    """An exponential moving average of ``model``'s weights (``torch.optim.swa_utils.AveragedModel``;
    call ``update_parameters(model)`` after every optimizer step). The decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` over the first updates, so the average of a run that starts
    from random weights is not dominated by them."""
    from torch.optim.swa_utils import AveragedModel

    if not 0.0 < decay < 1.0:
        raise UsageError(f"--ema {decay}: give a decay between 0 and 1 (e.g. 0.999), or leave --ema out.")

    def avg(avg_p: torch.Tensor, cur_p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return avg_p + (cur_p - avg_p) * (1.0 - d)

    return AveragedModel(model, avg_fn=avg, use_buffers=True)


def _train_step(model, opt, lr_b: torch.Tensor, hr_b: torch.Tensor, mode: str, device: str,
                loss_kind: str = "l1", luma_weight: float = 0.0) -> torch.Tensor:
    """One optimizer step in ``mode``; returns the (FP32) loss (``loss_kind``, see :data:`LOSSES`)."""
    if mode.startswith("channels_last"):
        lr_b = lr_b.contiguous(memory_format=torch.channels_last)
        hr_b = hr_b.contiguous(memory_format=torch.channels_last)
    with _autocast(mode, device):
        out = model(lr_b)
    loss = pixel_loss(out.float(), hr_b, loss_kind, luma_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def probe_precision(model: HAN, lr_b: torch.Tensor, hr_b: torch.Tensor, *, device: str = "cpu",
                    modes: tuple[str, ...] = PRECISION_MODES, rounds: int = 3) -> dict[str, float]:
    """Median seconds per training step of each mode, on copies of ``model`` (left untouched)
    with the real batch. Rounds are interleaved (one step of every mode per round, after one
    warm-up round), so a change in the machine's load hits every mode alike. A mode more than
    :data:`PROBE_DROP_FACTOR` times slower than the fastest in the first timed round is not timed
    further (its figure is that one step)."""
    import copy

    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        modes = tuple(m for m in modes if "bf16" not in m)
    runs = {}
    for m in modes:
        mm = copy.deepcopy(model).train()
        _set_format(mm, m.startswith("channels_last"))
        runs[m] = (mm, torch.optim.Adam(mm.parameters(), lr=1e-6))
    times: dict[str, list[float]] = {m: [] for m in modes}
    live = list(modes)
    for r in range(rounds + 1):
        for m in live:
            dt = _timed_step(*runs[m], lr_b, hr_b, m, device)
            if r:  # round 0 warms up (allocations, kernel choice)
                times[m].append(dt)
        if r == 1 and rounds > 1:
            # a mode already PROBE_DROP_FACTOR x slower than the fastest cannot win: stop timing it
            # (BF16 without native support is emulated: a step can take 10x FP32's, minutes a round)
            best = min(times[m][-1] for m in live)
            slow = [m for m in live if times[m][-1] > PROBE_DROP_FACTOR * best]
            if slow:
                log.info("precision probe: %s over %.0fx the fastest after one timed step; not timed further",
                         ", ".join(slow), PROBE_DROP_FACTOR)
            live = [m for m in live if m not in slow]
    return {m: float(np.median(v)) for m, v in times.items()}


def _timed_step(fwd, opt, lr_b: torch.Tensor, hr_b: torch.Tensor, mode: str, device: str) -> float:
    """Wall seconds of one training step (the GPU synchronised before and after)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    _train_step(fwd, opt, lr_b, hr_b, mode, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


#: ``--compile`` choices (see :class:`TrainConfig`).
COMPILE_MODES = ("auto", "on", "off")
#: ``--compile auto`` considers torch.compile only for runs expected to last at least this long:
#: compiling a training step of the bundled-size HAN took 17-26 s on 2 cores, and its gain there
#: was 1.13x over the best eager mode (``python -m hanrt_bench.train_speed``), so a run must be
#: several minutes long before compiling pays.
COMPILE_MIN_RUN_S = 600.0


def probe_compile(model: HAN, lr_b: torch.Tensor, hr_b: torch.Tensor, mode: str, *, device: str = "cpu",
                  rounds: int = 4) -> dict[str, float]:
    """Median seconds per training step in ``mode``, eager and under ``torch.compile``, on copies
    of ``model`` (left untouched) with the real batch, rounds interleaved after the compiled copy's
    first two steps (``compile_s``: their wall time, mostly compilation). Raises whatever
    compiling raises (no C++ compiler, an unsupported operation)."""
    import copy

    runs = {}
    for name in ("eager", "compiled"):
        mm = copy.deepcopy(model).train()
        _set_format(mm, mode.startswith("channels_last"))
        opt = torch.optim.Adam(mm.parameters(), lr=1e-6)
        runs[name] = (torch.compile(mm) if name == "compiled" else mm, opt)
    compile_s = sum(_timed_step(*runs["compiled"], lr_b, hr_b, mode, device) for _ in range(2))
    _train_step(*runs["eager"], lr_b, hr_b, mode, device)  # warm-up
    times: dict[str, list[float]] = {n: [] for n in runs}
    for _ in range(rounds):
        for n, run in runs.items():
            times[n].append(_timed_step(*run, lr_b, hr_b, mode, device))
    return {"eager_s": float(np.median(times["eager"])), "compiled_s": float(np.median(times["compiled"])),
            "compile_s": compile_s}


def _setup_compile(cfg: TrainConfig, model: HAN, sampler, speed: dict, *, start_step: int, elapsed0: float):
    """The module the training steps call: ``model`` itself or ``torch.compile(model)`` (they share
    the parameters; validation and saving use ``model``). Records the decision in ``speed``."""
    speed["compile"] = cfg.compile
    speed["compiled"] = False
    if cfg.compile == "off":
        return model
    mode = speed["mode"]
    if cfg.compile == "auto":
        if cfg.time_budget_s:
            run_s = cfg.time_budget_s - elapsed0
        else:
            lr_p, hr_p = sampler.next()
            step_s = (speed.get("step_s") or {}).get(mode) or probe_precision(
                model, lr_p.to(cfg.device), hr_p.to(cfg.device), device=cfg.device, modes=(mode,), rounds=1)[mode]
            run_s = (cfg.steps - start_step) * step_s
        if run_s < COMPILE_MIN_RUN_S:
            speed["compile_note"] = f"not tried: a run of ~{run_s / 60:.1f} min is too short to pay for compiling"
            log.info("torch.compile %s", speed["compile_note"])
            return model
        try:
            lr_p, hr_p = sampler.next()
            probe = probe_compile(model, lr_p.to(cfg.device), hr_p.to(cfg.device), mode, device=cfg.device)
        except Exception as exc:  # no C++ compiler, an operation Inductor cannot compile, ...
            speed["compile_note"] = f"failed, training eager: {type(exc).__name__}: {str(exc)[:300]}"
            log.warning("torch.compile %s", speed["compile_note"])
            return model
        speed["compile_probe"] = probe
        keep = probe["compiled_s"] <= probe["eager_s"] * (1 - PRECISION_MIN_GAIN)
        log.info("torch.compile probe (median s/step): eager %.3f, compiled %.3f (compiling took %.0f s) -> %s",
                 probe["eager_s"], probe["compiled_s"], probe["compile_s"], "compiled" if keep else "eager")
        if not keep:
            return model
    speed["compiled"] = True
    return torch.compile(model)


def cosine_lr(peak: float, floor: float, fraction: float) -> float:
    """The learning rate after ``fraction`` (0..1) of a cosine decay from ``peak`` to ``floor``."""
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, fraction)))


def _lr_at(step: int, cfg: TrainConfig, elapsed_s: float | None = None) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.time_budget_s and elapsed_s is not None:
        t = elapsed_s / cfg.time_budget_s
    else:
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cosine_lr(cfg.lr, cfg.lr_min, t)


@torch.no_grad()
def validate(model: HAN, images: list[np.ndarray], scale: int, device: str, max_side: int = 256) -> float:
    """Mean Y-PSNR (shave=scale) of the model on held-out strips (crops of at most max_side)."""
    from hanrt_bench.quality import bicubic_down, psnr_y

    model.eval()
    vals = []
    for strip in _val_strips(images, scale, max_side):
        src, hr = split_pair(strip)
        lr = bicubic_down(np.ascontiguousarray(src), scale)
        x = torch.from_numpy(np.array(lr)).permute(2, 0, 1)[None].float().to(device)
        sr = model(x).clamp(0, 255).round().byte()[0].permute(1, 2, 0).cpu().numpy()
        vals.append(psnr_y(sr, hr, shave=scale))
    model.train()
    return float(np.mean(vals)) if vals else float("nan")


def train(cfg: TrainConfig, *, progress: Callable[[int, dict], None] | None = None) -> dict:
    """Run training; returns a summary dict. ``progress(step, info)`` is called every step."""
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked but PyTorch sees no CUDA GPU; use --device cpu.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_suffix(".state.pt")

    if cfg.grow_blocks is not None and not cfg.init:
        raise UsageError("--grow-blocks deepens an existing model: give it with --init CHECKPOINT.")
    files = find_images(cfg.data)
    targets = find_targets(files, cfg.targets) if cfg.targets else None
    start_step = 0
    opt_state = None
    ema_state = None
    history: list[dict] = []
    lineage: list[dict] = []
    resumed_from: dict = {}
    elapsed0 = 0.0
    if cfg.resume:
        if not state_path.exists():
            raise UsageError(f"--resume: no training state {str(state_path)!r}; start without --resume.")
        ck = load_checkpoint(state_path)
        model = ck.model
        start_step = int(ck.meta.get("step", 0))
        opt_state = ck.meta.get("optimizer")
        ema_state = ck.meta.get("ema")
        history = list(ck.meta.get("history", []))
        lineage = list(ck.meta.get("lineage", []))
        elapsed0 = float(ck.meta.get("elapsed_s", 0.0))
        saved = ck.meta.get("train_config", {})
        resumed_from = saved
        for k in ("scale", "patch", "batch"):
            if k in saved and saved[k] != getattr(cfg, k):
                log.warning("resume: %s was %s, now %s", k, saved[k], getattr(cfg, k))
    elif cfg.init:
        ck = load_checkpoint(cfg.init)
        model = ck.model
        if model.scale != cfg.scale:
            raise UsageError(f"--init model is x{model.scale} but --scale is {cfg.scale}.")
        lineage = init_lineage(ck)
        if cfg.grow_blocks is not None:
            before = model.config.n_params_hint
            model = grow_blocks(model, cfg.grow_blocks)
            log.info("grew %s to %s (new blocks start as the identity)", before, model.config.n_params_hint)
    else:
        try:
            model = HAN(scale=cfg.scale, n_resgroups=cfg.n_resgroups, n_resblocks=cfg.n_resblocks,
                        n_feats=cfg.n_feats, reduction=cfg.reduction)
        except ValueError as exc:
            raise UsageError(f"invalid model size: {exc}.") from None
    if cfg.precision != "auto" and cfg.precision not in PRECISION_MODES:
        raise UsageError(f"--precision {cfg.precision!r}: choose auto or one of {', '.join(PRECISION_MODES)}.")
    if cfg.compile not in COMPILE_MODES:
        raise UsageError(f"--compile {cfg.compile!r}: choose one of {', '.join(COMPILE_MODES)}.")
    if cfg.loss not in LOSSES:
        raise UsageError(f"--loss {cfg.loss!r}: choose one of {', '.join(LOSSES)}.")
    _check_luma_weight(cfg.luma_weight)
    model.to(cfg.device).train()

    teacher = _open_teacher(cfg, model.scale) if cfg.teacher else None
    try:
        sampler = PatchSampler(files, scale=model.scale, patch=cfg.patch, batch=cfg.batch,
                               shrink=cfg.shrink, versions=cfg.versions, val_fraction=cfg.val_fraction,
                               seed=cfg.seed, stream_seed=cfg.seed + start_step, flat_std=cfg.flat_std,
                               flat_keep=cfg.flat_keep, targets=targets,
                               teacher=teacher.upscale if teacher is not None else None,
                               teacher_weight=cfg.teacher_weight)
    finally:
        if teacher is not None:
            teacher.close()
    teacher_sha = None
    if teacher is not None:
        from hanrt.io.digest import sha256_file
        from hanrt.models import resolve_model

        teacher_sha = sha256_file(resolve_model(cfg.teacher))
        log.info("teacher %s (%d-pass ensemble, weight %g): targets of %d images in %.0f s", cfg.teacher,
                 cfg.teacher_ensemble, cfg.teacher_weight, len(sampler.train_imgs), sampler.teacher_s)
        if resumed_from.get("teacher_sha256") not in (None, teacher_sha):
            log.warning("resume: the teacher %s is not the file the run began with (sha256 %s..., was %s...)",
                        cfg.teacher, teacher_sha[:12], resumed_from["teacher_sha256"][:12])
    if cfg.resume and resumed_from.get("teacher") and not cfg.teacher:
        log.warning("resume: the run began with --teacher %s; without it the targets are now the true images",
                    resumed_from["teacher"])
    speed = {"requested": cfg.precision, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if cfg.precision == "auto":
        try:
            lr_p, hr_p = sampler.next()
            speed["step_s"] = probe_precision(model, lr_p.to(cfg.device), hr_p.to(cfg.device), device=cfg.device)
        except BaseException:
            sampler.close()
            raise
        speed["mode"] = choose_precision(speed["step_s"])
        log.info("precision probe (median s/step): %s -> training with %s",
                 ", ".join(f"{m} {t:.3f}" for m, t in speed["step_s"].items()), speed["mode"])
    else:
        speed["mode"] = cfg.precision
        log.info("training with %s (forced)", cfg.precision)
    mode = speed["mode"]
    _set_format(model, mode.startswith("channels_last"))
    try:
        fwd = _setup_compile(cfg, model, sampler, speed, start_step=start_step, elapsed0=elapsed0)
    except BaseException:
        sampler.close()
        raise
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    ema = make_ema(model, cfg.ema) if cfg.ema else None
    if ema is not None:
        if ema_state is not None:
            ema.load_state_dict(ema_state)
        elif cfg.resume:
            log.warning("resume: the saved state has no weight average; --ema starts one from the current weights")
    # what is validated and saved: the weight average where there is one
    final = ema.module if ema is not None else model
    bic_val = _bicubic_val(sampler.val_imgs, model.scale)
    t0 = time.perf_counter()
    loss_avg = None

    recipe = _train_config_dict(cfg)
    recipe["speed"] = speed  # the probe's figures and the mode used (this run; a resume probes again)
    # what this stage trained on, so a bundle credits exactly these files (NOTICE)
    recipe["data_files"] = [f.relative_to(cfg.data).as_posix() for f in files]
    if teacher_sha is not None:  # which file taught, and the time its targets took (not in elapsed_s)
        recipe["teacher_sha256"] = teacher_sha
        recipe["teacher_s"] = round(sampler.teacher_s, 1)
    for k in ("init", "grow_blocks"):  # how the run began, even if --resume did not repeat it
        if recipe.get(k) is None and resumed_from.get(k) is not None:
            recipe[k] = resumed_from[k]

    def _save(path: Path, step: int) -> None:
        extra = {"ema": ema.state_dict()} if ema is not None else {}
        save_checkpoint(model, path, step=step, optimizer=opt.state_dict(), history=history, lineage=lineage,
                        elapsed_s=elapsed0 + time.perf_counter() - t0, train_config=recipe, **extra)

    def _validate() -> dict:
        rec = {"val_psnr": validate(final, sampler.val_imgs, model.scale, cfg.device)}
        if ema is not None:  # the last step's own weights, for comparison
            rec["val_psnr_raw"] = validate(model, sampler.val_imgs, model.scale, cfg.device)
        return rec

    try:
        step = start_step
        done = start_step
        for step in range(start_step, cfg.steps):
            elapsed = elapsed0 + time.perf_counter() - t0
            if cfg.time_budget_s and elapsed >= cfg.time_budget_s:
                log.info("time budget of %.0f s spent after %d steps", cfg.time_budget_s, step)
                break
            cur_lr = _lr_at(step, cfg, elapsed)
            for g in opt.param_groups:
                g["lr"] = cur_lr
            lr_b, hr_b = sampler.next()
            lr_b, hr_b = lr_b.to(cfg.device), hr_b.to(cfg.device)
            try:
                loss = _train_step(fwd, opt, lr_b, hr_b, mode, cfg.device, cfg.loss, cfg.luma_weight)
            except Exception as exc:
                if fwd is model:
                    raise
                # compiling happens at the first compiled step: if it fails, train eager
                speed["compiled"] = False
                speed["compile_note"] = f"failed, training eager: {type(exc).__name__}: {str(exc)[:300]}"
                log.warning("torch.compile %s", speed["compile_note"])
                fwd = model
                loss = _train_step(model, opt, lr_b, hr_b, mode, cfg.device, cfg.loss, cfg.luma_weight)
            if ema is not None:
                ema.update_parameters(model)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise HanrtError(f"training diverged: the loss became {lv} at step {step}; "
                                 f"resume from the last state with a lower --lr.")
            loss_avg = lv if loss_avg is None else 0.98 * loss_avg + 0.02 * lv
            info = {"loss": loss_avg, "lr": cur_lr, "mode": mode}
            done = step + 1
            if done % cfg.val_every == 0 or done == cfg.steps:
                rec = {"step": done, **_validate(), "bicubic_psnr": bic_val, "loss": loss_avg,
                       "elapsed_s": elapsed0 + time.perf_counter() - t0}
                history.append(rec)
                info.update(rec)
                log.info("step %d: val Y-PSNR %.3f dB%s (bicubic %.3f), loss %.3f", done, rec["val_psnr"],
                         f" (weight average; last step's weights {rec['val_psnr_raw']:.3f})" if ema is not None else "",
                         bic_val, loss_avg)
            if done % cfg.save_every == 0 or done == cfg.steps:
                _save(state_path, done)
            if progress:
                progress(done, info)
        if not history or history[-1]["step"] != done:
            history.append({"step": done, **_validate(), "bicubic_psnr": bic_val, "loss": loss_avg,
                            "elapsed_s": elapsed0 + time.perf_counter() - t0})
        _save(state_path, done)
        final.eval()
        save_checkpoint(final, out, step=done, history=history, train_config=recipe,
                        lineage=lineage, elapsed_s=elapsed0 + time.perf_counter() - t0)
    finally:
        sampler.close()
    return {"steps": done, "history": history, "elapsed_s": elapsed0 + time.perf_counter() - t0,
            "output": str(out), "config": model.config.to_dict()}


def _open_teacher(cfg: TrainConfig, scale: int):
    """The ``--teacher`` as an :class:`hanrt.Upscaler` with its self-ensemble (the Upscaler
    refuses an ensemble size it does not run)."""
    from hanrt import Upscaler

    _check_teacher_weight(cfg.teacher_weight)  # before the teacher is opened
    up = Upscaler(cfg.teacher, ensemble=cfg.teacher_ensemble, threads=cfg.threads)
    if up.scale != scale:
        up.close()
        raise UsageError(f"--teacher {cfg.teacher!r} upscales x{up.scale} but the model trains x{scale}; "
                         f"give a teacher of the same scale.")
    return up


def init_lineage(parent) -> list[dict]:
    """The training stages behind a loaded checkpoint (its own ``lineage`` plus itself), so a
    fine-tuned or grown model's checkpoint records its whole history (plain data)."""
    meta = parent.meta
    stage = {"source_sha256": parent.sha256, "config": parent.config.to_dict()}
    for k in ("step", "elapsed_s", "train_config"):
        if k in meta:
            stage[k] = meta[k]
    if meta.get("history"):
        stage["final_val"] = meta["history"][-1]
    if "step" not in meta:
        stage["origin"] = "external checkpoint (no hanrt training record)"
    return [*meta.get("lineage", []), stage]


def _train_config_dict(cfg: TrainConfig) -> dict:
    """The recipe as plain data (lists, not tuples) for the checkpoint (loads with weights_only)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}


def _bicubic_val(images: list[np.ndarray], scale: int, max_side: int = 256) -> float:
    from hanrt_bench.quality import bicubic_down, bicubic_up, psnr_y

    vals = [psnr_y(bicubic_up(bicubic_down(np.ascontiguousarray(src), scale), scale), hr, shave=scale)
            for src, hr in map(split_pair, _val_strips(images, scale, max_side))]
    return float(np.mean(vals)) if vals else float("nan")


#: A validation strip whose luma varies less than this (std, 0..255) is left out: a flat strip
#: (white paper or background in line art and screenshots) is reproduced exactly by bicubic, its
#: PSNR is infinite, and one such strip turns the mean into ``inf``.
VAL_MIN_STD = 1.0


def _val_strips(images: list[np.ndarray], scale: int, max_side: int) -> list[np.ndarray]:
    """The HR validation crops (at most ``max_side``, modcropped) that carry texture."""
    from hanrt_bench.quality import modcrop, rgb_to_y

    out = []
    for img in images:
        hr = modcrop(img[:max_side, :max_side], scale)
        if min(hr.shape[:2]) < 4 * scale or float(np.std(rgb_to_y(split_pair(hr)[1]))) < VAL_MIN_STD:
            continue
        out.append(hr)
    return out
