"""``hanrt train``: train or fine-tune HAN on a folder of photos (needs the [export] extra).

Registered by hanrt_export (entry point ``train``). The options' defaults are
:class:`~hanrt_export.requests.TrainConfig`'s; :func:`train_config` builds that config once."""

from __future__ import annotations

import argparse

from hanrt.cli import Command

from ..requests import LOSSES, TrainConfig

_D = TrainConfig

DESCRIPTION = """\
Train HAN from scratch or fine-tune an existing checkpoint (--init, official HAN weights too) on
your own photos: HR patches from the photos, LR by bicubic x scale, L1 loss, Adam with warm-up
and cosine decay, flips/rotations, validation PSNR on a held-out strip of every photo.

  hanrt train --fetch-data data/train     # photos, line art and screenshots (licensed, sha256-checked)
  hanrt train --fetch-photos data/photos  # the licensed photos alone
  hanrt train --data data/photos --output han_small.pt --minutes 60
  hanrt train --data my_documents/ --init HAN_BIX4.pt --output han_docs.pt --steps 2000 --lr 1e-4
  hanrt train --data data/photos --output han_small.pt --resume   # continue after a stop
  hanrt train --data data/photos --init han.pt --teacher han.pt --teacher-ensemble 4 --output han_d.pt
                                          # distil the model's own 4-pass self-ensemble into it
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder of training photos (jpg/png/webp/tiff/bmp)")
    p.add_argument("--output", "-o", help="final checkpoint (.pt); the resumable state goes to <output>.state.pt")
    p.add_argument("--fetch-photos", metavar="DIR", help="download the licensed training photos (every photo of --fetch-data, flat) into DIR and exit")
    p.add_argument("--fetch-data", metavar="DIR",
                   help="put every kind of training data into DIR/photos, DIR/lineart, DIR/screens (Debian "
                        "packages, licence- and sha256-checked, plus generated screenshots; credits in DIR/NOTICE) "
                        "and exit; train on it with --data DIR")
    p.add_argument("--kinds", nargs="+", choices=["photos", "lineart", "screens"],
                   default=["photos", "lineart", "screens"], help="with --fetch-data: the kinds to fetch")
    p.add_argument("--deb", action="append", metavar="PATH",
                   help="with --fetch-photos/--fetch-data: use this already downloaded .deb (repeatable)")
    p.add_argument("--accept-new-screens", action="store_true",
                   help="with --fetch-data: keep generated screenshots whose pixels differ from the recorded "
                        "digests (other font versions or Pillow), with a warning")
    p.add_argument("--targets", metavar="DIR",
                   help="folder of target images with the same names and sizes as --data's: the model learns "
                        "to turn each shrunken --data image into its target (restoring SR, e.g. the clean scans "
                        "of `python -m hanrt_bench.docpages --clean`); default: each image is its own target")
    p.add_argument("--init", help="fine-tune from this HAN checkpoint (official or hanrt)")
    p.add_argument("--grow-blocks", type=int, metavar="N",
                   help="with --init: deepen every residual group to N blocks; the new blocks start "
                        "as the identity, so training begins from the init model's quality")
    p.add_argument("--resume", action="store_true", help="continue from <output>.state.pt")
    p.add_argument("--scale", type=int, default=_D.scale, choices=[2, 3, 4, 8])
    p.add_argument("--resgroups", type=int, default=_D.n_resgroups, help="residual groups (default %(default)s; official 10)")
    p.add_argument("--resblocks", type=int, default=_D.n_resblocks, help="blocks per group (default %(default)s; official 20)")
    p.add_argument("--feats", type=int, default=_D.n_feats, help="features (default %(default)s; official 64)")
    p.add_argument("--reduction", type=int, default=_D.reduction, help="channel-attention reduction (default %(default)s)")
    p.add_argument("--steps", type=int, default=_D.steps, help="maximum steps (default %(default)s)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget; the LR schedule follows the time spent and training stops when it is used")
    p.add_argument("--batch", type=int, default=_D.batch)
    p.add_argument("--patch", type=int, default=_D.patch, help="LR patch side in pixels (HR side = patch x scale)")
    p.add_argument("--lr", type=float, default=_D.lr, help="peak learning rate (default %(default)g)")
    p.add_argument("--warmup", type=int, default=_D.warmup, help="linear warm-up steps")
    p.add_argument("--val-every", type=int, default=_D.val_every)
    p.add_argument("--save-every", type=int, default=_D.save_every)
    p.add_argument("--flat-std", type=float, default=_D.flat_std, metavar="S",
                   help="texture-biased sampling: HR patches whose luma std (0..255) is below S are "
                        "kept only with probability --flat-keep (default 0: off)")
    p.add_argument("--flat-keep", type=float, default=_D.flat_keep, metavar="P",
                   help="probability of keeping a flat patch when --flat-std is set (default %(default)s)")
    p.add_argument("--shrink", type=float, nargs=2, default=_D.shrink, metavar=("LO", "HI"),
                   help="each training image is first shrunk by a random factor in LO..HI (default 0.25 0.6, "
                        "for camera photos; 1 1 keeps images as they are, e.g. generated pages)")
    p.add_argument("--versions", type=int, default=_D.versions, help="shrunken versions of every image (default 4)")
    p.add_argument("--precision", default=_D.precision,
                   choices=["auto", "fp32", "channels_last", "bf16", "channels_last+bf16"],
                   help="training-step arithmetic; auto (default) times each for a few steps of the real "
                        "model and batch and keeps the fastest (fp32 unless another is >=10%% faster); "
                        "validation and saved weights are FP32 in every mode")
    p.add_argument("--compile", default=_D.compile, choices=["auto", "on", "off"],
                   help="torch.compile the training step: auto (default) compiles and times it against eager "
                        "for runs of 10 minutes or more and keeps it if >=10%% faster; on: always; off: never "
                        "(compiling needs a C++ compiler and takes ~15-30 s on 2 cores)")
    p.add_argument("--loss", default=_D.loss, choices=LOSSES,
                   help="training loss on 0..255 pixels (default %(default)s; mse optimises what PSNR measures, "
                        "a common last fine-tuning stage)")
    p.add_argument("--luma-weight", type=float, default=_D.luma_weight, metavar="W",
                   help="take this share of the loss on luma (BT.601 Y, what the papers' PSNR measures) and "
                        "the rest on R, G, B (default %(default)s: RGB only; 0 <= W < 1 keeps colour learning)")
    p.add_argument("--ema", type=float, default=_D.ema, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999) and "
                        "validate and save it instead of the last step's weights (default: off)")
    p.add_argument("--teacher", metavar="MODEL",
                   help="distil: a model (photo, document, .onnx, .pt, engine) upscales every training image "
                        "once, and its output is the target instead of (or mixed with) the image itself; "
                        "validation stays against the true images")
    p.add_argument("--teacher-ensemble", type=int, default=_D.teacher_ensemble, choices=[1, 2, 4, 8], metavar="N",
                   help="with --teacher: its self-ensemble passes (1, 2, 4, 8; default %(default)s); the "
                        "student learns the ensemble's output at the cost of one pass")
    p.add_argument("--teacher-weight", type=float, default=_D.teacher_weight, metavar="W",
                   help="with --teacher: its share of the target, the rest is the true image "
                        "(default %(default)g: the teacher alone)")
    p.add_argument("--device", default=_D.device, help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=_D.threads, help="CPU threads for PyTorch (0: its default)")
    p.add_argument("--seed", type=int, default=_D.seed)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the parsed options (the one place they are read)."""
    return TrainConfig(
        data=args.data, output=args.output, scale=args.scale, n_resgroups=args.resgroups,
        n_resblocks=args.resblocks, n_feats=args.feats, reduction=args.reduction, steps=args.steps,
        batch=args.batch, patch=args.patch, lr=args.lr, warmup=args.warmup, val_every=args.val_every,
        save_every=args.save_every, seed=args.seed, device=args.device, threads=args.threads,
        init=args.init, resume=args.resume, grow_blocks=args.grow_blocks,
        flat_std=args.flat_std, flat_keep=args.flat_keep, precision=args.precision,
        compile=args.compile, shrink=(min(args.shrink), max(args.shrink)), versions=args.versions,
        time_budget_s=args.minutes * 60 if args.minutes else None, targets=args.targets,
        loss=args.loss, ema=args.ema, luma_weight=args.luma_weight, teacher=args.teacher,
        teacher_ensemble=args.teacher_ensemble, teacher_weight=args.teacher_weight,
    )


def run(args: argparse.Namespace) -> int:
    from hanrt.errors import UsageError, require

    require("torch", extra="export", purpose="hanrt train")
    if args.fetch_photos:
        from ..data import deb_package_name, fetch_training_photos

        paths = fetch_training_photos(args.fetch_photos, debs={deb_package_name(d): d for d in args.deb or []})
        print(f"{len(paths)} photos ready in {args.fetch_photos}")
        return 0
    if args.fetch_data:
        from ..data import deb_package_name, fetch_training_data

        got = fetch_training_data(args.fetch_data, kinds=args.kinds,
                                  debs={deb_package_name(d): d for d in args.deb or []},
                                  accept_new_screens=args.accept_new_screens)
        print(", ".join(f"{len(v)} {k}" for k, v in got.items()) + f" ready in {args.fetch_data} (credits: NOTICE)")
        return 0
    if not args.data or not args.output:
        raise UsageError("hanrt train needs --data DIR and --output MODEL.pt (or --fetch-data DIR).")
    from ..train import train

    cfg = train_config(args)
    bar = _progress(cfg.steps)
    last_val = {}

    def progress(step: int, info: dict) -> None:
        if "val_psnr" in info:
            last_val.update(info)
        if bar is not None:
            bar.n = step
            post = {"loss": f"{info['loss']:.3f}", "lr": f"{info['lr']:.2e}"}
            if last_val:
                post["val"] = f"{last_val['val_psnr']:.2f}dB (bicubic {last_val['bicubic_psnr']:.2f})"
            bar.set_postfix(post, refresh=False)
            bar.refresh()

    try:
        res = train(cfg, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    h = res["history"][-1] if res["history"] else {}
    print(f"trained {res['steps']} steps in {res['elapsed_s'] / 60:.1f} min -> {res['output']}"
          + (f"; validation Y-PSNR {h['val_psnr']:.3f} dB vs bicubic {h['bicubic_psnr']:.3f} dB" if h else ""))
    return 0


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True)


COMMAND = Command("train", "train or fine-tune HAN on your photos", configure, run, order=80,
                  description=DESCRIPTION)
