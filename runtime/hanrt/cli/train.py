"""``hanrt train``: train or fine-tune HAN on a folder of photos (needs the [export] extra)."""

from __future__ import annotations

import argparse

from . import Command

DESCRIPTION = """\
Train HAN from scratch or fine-tune an existing checkpoint (--init, official HAN weights too) on
your own photos: HR patches from the photos, LR by bicubic x scale, L1 loss, Adam with warm-up
and cosine decay, flips/rotations, validation PSNR on a held-out strip of every photo.

  hanrt train --fetch-photos data/photos                        # the licensed default photos
  hanrt train --data data/photos --output han_small.pt --minutes 60
  hanrt train --data my_documents/ --init HAN_BIX4.pt --output han_docs.pt --steps 2000 --lr 1e-4
  hanrt train --data data/photos --output han_small.pt --resume   # continue after a stop
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder of training photos (jpg/png/webp/tiff/bmp)")
    p.add_argument("--output", "-o", help="final checkpoint (.pt); the resumable state goes to <output>.state.pt")
    p.add_argument("--fetch-photos", metavar="DIR", help="download the licensed training photos into DIR and exit")
    p.add_argument("--deb", help="with --fetch-photos: use this already downloaded .deb")
    p.add_argument("--init", help="fine-tune from this HAN checkpoint (official or hanrt)")
    p.add_argument("--grow-blocks", type=int, metavar="N",
                   help="with --init: deepen every residual group to N blocks; the new blocks start "
                        "as the identity, so training begins from the init model's quality")
    p.add_argument("--resume", action="store_true", help="continue from <output>.state.pt")
    p.add_argument("--scale", type=int, default=4, choices=[2, 3, 4, 8])
    p.add_argument("--resgroups", type=int, default=2, help="residual groups (default 2; official 10)")
    p.add_argument("--resblocks", type=int, default=4, help="blocks per group (default 4; official 20)")
    p.add_argument("--feats", type=int, default=32, help="features (default 32; official 64)")
    p.add_argument("--reduction", type=int, default=8, help="channel-attention reduction (default 8)")
    p.add_argument("--steps", type=int, default=20000, help="maximum steps (default 20000)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget; the LR schedule follows the time spent and training stops when it is used")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48, help="LR patch side in pixels (HR side = patch x scale)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--flat-std", type=float, default=0.0, metavar="S",
                   help="texture-biased sampling: HR patches whose luma std (0..255) is below S are "
                        "kept only with probability --flat-keep (default 0: off)")
    p.add_argument("--flat-keep", type=float, default=0.25, metavar="P",
                   help="probability of keeping a flat patch when --flat-std is set (default 0.25)")
    p.add_argument("--shrink", type=float, nargs=2, default=(0.25, 0.6), metavar=("LO", "HI"),
                   help="each training image is first shrunk by a random factor in LO..HI (default 0.25 0.6, "
                        "for camera photos; 1 1 keeps images as they are, e.g. generated pages)")
    p.add_argument("--versions", type=int, default=4, help="shrunken versions of every image (default 4)")
    p.add_argument("--precision", default="auto",
                   choices=["auto", "fp32", "channels_last", "bf16", "channels_last+bf16"],
                   help="training-step arithmetic; auto (default) times each for a few steps of the real "
                        "model and batch and keeps the fastest (fp32 unless another is >=10%% faster); "
                        "validation and saved weights are FP32 in every mode")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch (0: its default)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from hanrt.errors import UsageError, require

    require("torch", extra="export", purpose="hanrt train")
    if args.fetch_photos:
        from hanrt_export.data import fetch_training_photos

        paths = fetch_training_photos(args.fetch_photos, deb=args.deb)
        print(f"{len(paths)} photos ready in {args.fetch_photos}")
        return 0
    if not args.data or not args.output:
        raise UsageError("hanrt train needs --data DIR and --output MODEL.pt (or --fetch-photos DIR).")
    from hanrt_export.train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data, output=args.output, scale=args.scale, n_resgroups=args.resgroups,
        n_resblocks=args.resblocks, n_feats=args.feats, reduction=args.reduction, steps=args.steps,
        batch=args.batch, patch=args.patch, lr=args.lr, warmup=args.warmup, val_every=args.val_every,
        save_every=args.save_every, seed=args.seed, device=args.device, threads=args.threads,
        init=args.init, resume=args.resume, grow_blocks=args.grow_blocks,
        flat_std=args.flat_std, flat_keep=args.flat_keep, precision=args.precision,
        shrink=(min(args.shrink), max(args.shrink)), versions=args.versions,
        time_budget_s=args.minutes * 60 if args.minutes else None,
    )
    bar = _progress(args.steps)
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
