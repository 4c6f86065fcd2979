"""Training-step speed of ``hanrt train``'s arithmetic modes, eager and under ``torch.compile``.

``hanrt train --precision auto`` times the four eager modes for a few steps at start and keeps the
fastest. This tool answers the question that probe leaves open: does ``torch.compile`` (Inductor)
make a training step of the real network measurably faster on this machine, and what does the
compilation cost before the first step? Rounds are interleaved (one step of every variant per
round) so a change in the machine's load hits every variant alike; the compile time is the first
(warm-up) steps' wall time, reported apart from the per-step medians.

    python -m hanrt_bench.train_speed --resblocks 8 --batch 16 --patch 40 --threads 2 --rounds 15

Needs torch (the ``export`` extra) and, for the compiled variants, a C++ compiler (Inductor's CPU
backend builds its kernels with it).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np

__all__ = ["measure", "main"]


def _variants(modes, compile_too: bool):
    out = [(m, False) for m in modes]
    if compile_too:
        out += [(m, True) for m in modes]
    return out


def measure(*, resgroups: int = 2, resblocks: int = 8, feats: int = 32, reduction: int = 8, scale: int = 4, batch: int = 16,
            patch: int = 40, rounds: int = 10, warmup: int = 2, modes=None, compile_too: bool = True,
            seed: int = 0) -> list[dict]:
    """Median seconds per optimizer step for every (mode, compiled) variant; one dict per variant
    with ``mode``, ``compiled``, ``median_s``, ``min_s``, ``first_s`` (the warm-up steps' total,
    which for a compiled variant is mostly compilation) and ``loss`` (last step's, a sanity check
    that the variant trains the same network)."""
    import torch

    from hanrt_export.han import HAN
    from hanrt_export.han_config import HANConfig
    from hanrt_export.train import PRECISION_MODES, _set_format, _train_step

    modes = tuple(modes or PRECISION_MODES)
    torch.manual_seed(seed)
    base = HAN.from_config(HANConfig(scale=scale, n_resgroups=resgroups, n_resblocks=resblocks,
                                     n_feats=feats, reduction=reduction)).train()
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(batch, 3, patch * scale, patch * scale, generator=g) * 255
    lr = torch.nn.functional.avg_pool2d(hr, scale)  # any LR/HR pair serves for timing
    runs = {}
    for m, comp in _variants(modes, compile_too):
        mm = copy.deepcopy(base).train()
        _set_format(mm, m.startswith("channels_last"))
        opt = torch.optim.Adam(mm.parameters(), lr=1e-6)
        fwd = torch.compile(mm) if comp else mm
        runs[(m, comp)] = (fwd, opt)
    first = {k: 0.0 for k in runs}
    times: dict = {k: [] for k in runs}
    loss = {}
    for r in range(warmup + rounds):
        for k, (fwd, opt) in runs.items():
            t = time.perf_counter()
            loss[k] = float(_train_step(fwd, opt, lr, hr, k[0], "cpu").detach())
            dt = time.perf_counter() - t
            if r < warmup:
                first[k] += dt
            else:
                times[k].append(dt)
    return [{"mode": m, "compiled": comp, "median_s": float(np.median(times[(m, comp)])),
             "min_s": float(np.min(times[(m, comp)])), "first_s": first[(m, comp)],
             "loss": loss[(m, comp)]} for (m, comp) in runs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hanrt_bench.train_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resgroups", type=int, default=2)
    p.add_argument("--resblocks", type=int, default=8)
    p.add_argument("--feats", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=40, help="LR patch side")
    p.add_argument("--rounds", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant (compilation happens here)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--reduction", type=int, default=8, help="channel-attention reduction (hanrt's models: 8)")
    p.add_argument("--modes", nargs="+", default=None,
                   choices=("fp32", "channels_last", "bf16", "channels_last+bf16"), help="a subset of the modes")
    p.add_argument("--no-compile", action="store_true", help="eager variants only")
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    rows = measure(resgroups=a.resgroups, resblocks=a.resblocks, feats=a.feats, reduction=a.reduction, batch=a.batch, patch=a.patch,
                   rounds=a.rounds, warmup=a.warmup, modes=a.modes, compile_too=not a.no_compile)
    ref = next((r["median_s"] for r in rows if r["mode"] == "fp32" and not r["compiled"]), None)
    print(f"HAN {a.resgroups}x{a.resblocks}x{a.feats}, batch {a.batch} of {a.patch}x{a.patch}, "
          f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{a.rounds} interleaved timed steps per variant")
    print(f"{'mode':<20} {'compiled':<9} {'median s/step':>13} {'min':>7} {'steps/s':>8} {'vs fp32':>8} "
          f"{'warm-up s':>9} {'loss':>8}")
    for r in rows:
        rel = f"{ref / r['median_s']:.2f}x" if ref else "-"
        print(f"{r['mode']:<20} {'yes' if r['compiled'] else 'no':<9} {r['median_s']:>13.3f} {r['min_s']:>7.3f} "
              f"{1 / r['median_s']:>8.2f} {rel:>8} {r['first_s']:>9.1f} {r['loss']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
