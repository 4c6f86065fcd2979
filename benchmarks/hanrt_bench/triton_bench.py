"""Throughput of ``--backend triton`` against the local backend on the same tiles, and with 1 vs N servers.

    python -m hanrt_bench.triton_bench --model hanrt_x4.onnx --server A:8000 --server B:8000 \\
        --size 192x192 --tile 64 --batch 4 --images 8

Rows (each over the same ``--images`` random photos, after one untimed warm-up image; ``--rounds``
passes over all rows, interleaved, are added up):

- ``local``: the Upscaler on ONNX Runtime's CPU provider in this process (``--threads``);
- ``triton xK``: the same tiles sent to the first K servers (K = 1 .. number of ``--server``).

It prints tiles/s and the ratio of each row's wall time to ``local``'s. The Upscaler keeps two
batches per server in flight, so its rows overlap the client's tiling with the servers' compute;
the ``round trip`` rows time the same batch of tiles sent one call at a time (``backend.run``, no
overlap) locally and to the first server, alternating call by call: their ratio is the client's per-batch overhead
(serialization, HTTP, Triton's queue and the Python backend) on top of the same computation. Servers are not started
here (``hanrt serve``, see the README's "From one box to many"); start each with ``--threads`` equal
to this run's ``--threads`` so a server's compute matches the local row's. Outputs are checked
equal to the local ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    from hanrt.triton_repo import model_name_for, resolve_model
    from hanrt.upscaler import Upscaler

    p = argparse.ArgumentParser(prog="python -m hanrt_bench.triton_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="hanrt_x4", help="local model file or bundled name (its stem names it on the servers)")
    p.add_argument("--server", action="append", required=True, help="HOST:PORT (repeat; rows use the first 1..N)")
    p.add_argument("--size", default="192x192", help="HxW of the random photos (default 192x192)")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--margin", type=int, default=None,
                   help="tile margin (default: the model's recorded margin, else 8)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads of the local row (default 1)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over all rows, interleaved (default 2)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.images)]
    path = resolve_model(args.model)
    kw = dict(tile=args.tile, margin=args.margin, batch=args.batch)
    rows = []
    with contextlib.ExitStack() as stack:
        ups = {"local": stack.enter_context(Upscaler(path, backend="ort-cpu", threads=args.threads, **kw))}
        for k in range(1, len(args.server) + 1):
            ups[f"triton x{k}"] = stack.enter_context(Upscaler(model_name_for(path), servers=args.server[:k], **kw))
        tiles = ups["local"].plan(h, w).count * len(images) * args.rounds
        margin = ups["local"].margin
        for up in ups.values():
            up.upscale(images[0])  # warm-up: sessions, connections, the servers' first batches
        seconds = dict.fromkeys(ups, 0.0)
        outs: dict[str, list[np.ndarray]] = {}
        for _ in range(args.rounds):  # rows interleaved, so a change in the machine's load hits all alike
            for label, up in ups.items():
                t0 = time.perf_counter()
                outs[label] = [up.upscale(im) for im in images]
                seconds[label] += time.perf_counter() - t0
        for label, up in ups.items():
            row = {"row": label, "seconds": seconds[label], "tiles_per_s": tiles / seconds[label],
                   "ratio": seconds[label] / seconds["local"]}
            if label != "local":
                row["equal_to_local"] = all(np.array_equal(a, b) for a, b in zip(outs[label], outs["local"]))
                row["batches_per_server"] = [v["batches"] for v in up.backend.stats().values()]
            rows.append(row)
    from hanrt.backends.onnxrt import OnnxRuntimeBackend
    from hanrt.backends.base import OrtConfig
    from hanrt.backends.triton import open_triton

    x = rng.uniform(0, 255, (args.batch, 3, args.tile, args.tile)).astype(np.float32)
    calls = max(4, args.images * 2)
    with OnnxRuntimeBackend(path, config=OrtConfig(intra_op_threads=args.threads)) as loc, \
            open_triton(args.server[:1], model_name_for(path)) as rem:
        pairs = (("round trip local", loc), ("round trip triton", rem))
        trips = dict.fromkeys([label for label, _ in pairs], 0.0)
        for _, be in pairs:
            be.run(x)
        for _ in range(calls):  # alternating, so a change in the machine's load hits both alike
            for label, be in pairs:
                t0 = time.perf_counter()
                be.run(x)
                trips[label] += time.perf_counter() - t0
        trips = {label: t / calls for label, t in trips.items()}
    for label, t in trips.items():
        rows.append({"row": label, "seconds": t, "tiles_per_s": args.batch / t,
                     "ratio": t / trips["round trip local"], "per": f"one {args.batch}-tile batch, {calls} calls"})
    if args.json:
        print(json.dumps({"tiles": tiles, "rows": rows}, indent=2))
    else:
        print(f"{args.rounds} x {len(images)} images {w}x{h}, tile {args.tile}, margin {margin}, "
              f"batch {args.batch}: {tiles} tiles per row")
        for r in rows:
            if "per" in r:
                print(f"{r['row']:>18}: {r['seconds'] * 1e3:.1f} ms per call ({r['per']}), {r['ratio']:.2f}x local's")
                continue
            extra = "" if r["row"] == "local" else f", outputs equal to local: {r['equal_to_local']}, batches per server {r['batches_per_server']}"
            print(f"{r['row']:>18}: {r['seconds']:.2f} s, {r['tiles_per_s']:.1f} tiles/s, {r['ratio']:.2f}x local's time{extra}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
