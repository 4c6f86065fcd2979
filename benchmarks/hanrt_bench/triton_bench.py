"""Throughput of ``--backend triton`` against the local backend on the same tiles, and with 1 vs N servers.

    python -m hanrt_bench.triton_bench --model hanrt_x4.onnx --server A:8000 --server B:8000 \\
        --size 192x192 --tile 64 --batch 4 --images 8

Rows (each over the same ``--images`` random photos, after one untimed warm-up image):

- ``local``: the Upscaler on ONNX Runtime's CPU provider in this process (``--threads``);
- ``triton xK``: the same tiles sent to the first K servers (K = 1 .. number of ``--server``).

It prints tiles/s and the ratio of each row's wall time to ``local``'s. The Upscaler keeps two
batches per server in flight, so its rows overlap the client's tiling with the servers' compute;
the ``round trip`` rows time the same batch of tiles sent one call at a time (``backend.run``, no
overlap) locally and to the first server: their ratio is the client's per-batch overhead
(serialization, HTTP, Triton's queue and the Python backend) on top of the same computation. Servers are not started
here (``hanrt serve``, see the README's "From one box to many"); start each with ``--threads`` equal
to this run's ``--threads`` so a server's compute matches the local row's. Outputs are checked
equal to the local ones.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Sequence

import numpy as np


def _time(up, images) -> tuple[float, list[np.ndarray]]:
    up.upscale(images[0])  # warm-up: sessions, connections, the server's first batch
    t0 = time.perf_counter()
    outs = [up.upscale(im) for im in images]
    return time.perf_counter() - t0, outs


def main(argv: Sequence[str] | None = None) -> int:
    from hanrt.triton_repo import model_name_for, resolve_model
    from hanrt.upscaler import Upscaler

    p = argparse.ArgumentParser(prog="python -m hanrt_bench.triton_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="hanrt_x4", help="local model file or bundled name (its stem names it on the servers)")
    p.add_argument("--server", action="append", required=True, help="HOST:PORT (repeat; rows use the first 1..N)")
    p.add_argument("--size", default="192x192", help="HxW of the random photos (default 192x192)")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--margin", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads of the local row (default 1)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.images)]
    path = resolve_model(args.model)
    kw = dict(tile=args.tile, margin=args.margin, batch=args.batch)
    rows = []
    with Upscaler(path, backend="ort-cpu", threads=args.threads, **kw) as up:
        tiles = up.plan(h, w).count * len(images)
        t_local, ref = _time(up, images)
    rows.append({"row": "local", "seconds": t_local, "tiles_per_s": tiles / t_local, "ratio": 1.0})
    for k in range(1, len(args.server) + 1):
        with Upscaler(model_name_for(path), servers=args.server[:k], **kw) as up:
            t, outs = _time(up, images)
            stats = up.backend.stats()
        same = all(np.array_equal(a, b) for a, b in zip(outs, ref))
        rows.append({"row": f"triton x{k}", "seconds": t, "tiles_per_s": tiles / t, "ratio": t / t_local,
                     "equal_to_local": same, "batches_per_server": [v["batches"] for v in stats.values()]})
    from hanrt.backends.onnxrt import OnnxRuntimeBackend
    from hanrt.backends.base import OrtConfig
    from hanrt.backends.triton import open_triton

    x = rng.uniform(0, 255, (args.batch, 3, args.tile, args.tile)).astype(np.float32)
    calls = max(4, args.images * 2)
    with OnnxRuntimeBackend(path, config=OrtConfig(intra_op_threads=args.threads)) as loc, \
            open_triton(args.server[:1], model_name_for(path)) as rem:
        trips = {}
        for label, be in (("round trip local", loc), ("round trip triton", rem)):
            be.run(x)
            t0 = time.perf_counter()
            for _ in range(calls):
                be.run(x)
            trips[label] = (time.perf_counter() - t0) / calls
    for label, t in trips.items():
        rows.append({"row": label, "seconds": t, "tiles_per_s": args.batch / t,
                     "ratio": t / trips["round trip local"], "per": f"one {args.batch}-tile batch, {calls} calls"})
    if args.json:
        print(json.dumps({"tiles": tiles, "rows": rows}, indent=2))
    else:
        print(f"{len(images)} images {w}x{h}, tile {args.tile}, margin {args.margin}, batch {args.batch}: {tiles} tiles")
        for r in rows:
            if "per" in r:
                print(f"{r['row']:>18}: {r['seconds'] * 1e3:.1f} ms per call ({r['per']}), {r['ratio']:.2f}x local's")
                continue
            extra = "" if r["row"] == "local" else f", outputs equal to local: {r['equal_to_local']}, batches per server {r['batches_per_server']}"
            print(f"{r['row']:>18}: {r['seconds']:.2f} s, {r['tiles_per_s']:.1f} tiles/s, {r['ratio']:.2f}x local's time{extra}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
