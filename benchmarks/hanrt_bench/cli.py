"""Implementations behind ``hanrt bench`` and ``hanrt eval``: each takes its typed request
(:mod:`hanrt_bench.requests`), which the commands (:mod:`hanrt_bench.commands`) build from the options.

Results go to stdout as markdown (the only printing in this package); files go to ``--output``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hanrt.errors import HanrtError, InputError, OutputError, UsageError

from .requests import BenchRequest, EvalRequest

log = logging.getLogger(__name__)

__all__ = ["run_bench_cli", "run_eval_cli", "parse_size"]


def parse_size(text: str) -> tuple[int, int]:
    """``"96x128"`` -> (96, 128) as (height, width); ``"96"`` -> (96, 96)."""
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--input {text!r}: expected HxW (e.g. 96x128) or an image path.") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise UsageError(f"--input {text!r}: expected HxW with positive sides.")
    return vals[0], vals[1]


def _say(msg: str) -> None:
    print(f"hanrt bench: {msg}", file=sys.stderr, flush=True)


def _out_dir(path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"--output {path!r} exists and is not a folder.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --output folder {path!r}: {exc.strerror}.") from None
    return p


def _precision_files(args: BenchRequest | EvalRequest) -> dict[str, str]:
    out = {}
    for prec, v in (("fp16", args.fp16), ("int8", args.int8)):
        if v:
            if not Path(v).is_file():
                raise InputError(f"--{prec} {v!r} does not exist.")
            out[prec] = v
    return out


def run_bench_cli(args: BenchRequest) -> int:
    from .bench import resolve_model, run_bench
    from .envinfo import environment
    from .peak import cpu_peak, gpu_peak
    from .report import markdown_table, write_all
    from .suite import BASELINES, Suite, load_suite

    if getattr(args, "policy", False):
        return _run_policy_cli(args)
    suite = load_suite(args.suite) if args.suite else Suite(name="command-line")
    over: dict[str, Any] = {}
    image_file = None
    if args.input:
        if len(args.input) > 1:
            raise UsageError(f"--input takes one size or image here ({len(args.input)} given); several sizes "
                             f"are for --policy.")
        inp = args.input[0]
        if Path(inp).is_file():
            over["input"] = image_file = inp
        else:
            over["input"] = parse_size(inp)
    if args.baselines is not None:
        names = () if args.baselines.strip().lower() == "none" else tuple(b.strip() for b in args.baselines.split(",") if b.strip())
        bad = [b for b in names if b not in BASELINES]
        if bad:
            raise UsageError(f"--baselines: unknown {bad}; choose from {', '.join(BASELINES)} or 'none'.")
        over["baselines"] = names
    suite = suite.with_overrides(**over, warmup=args.warmup, iters=args.iters, max_seconds=args.max_seconds,
                                 backend=args.backend, precision=args.precision, tile=args.tile,
                                 margin=args.margin, batch=args.batch)
    model, checkpoint = _model_and_checkpoint(args.model or suite.model, args.checkpoint)
    out = _out_dir(args.output)
    quality = None
    if args.quality:
        try:
            quality = json.loads(Path(args.quality).read_text(encoding="utf-8"))["quality"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--quality {args.quality!r}: not a hanrt eval summary.json ({exc}).") from None
    device = args.device
    if device == "auto":
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    if any(b for b in suite.baselines):
        try:
            import torch  # noqa: F401
        except ImportError:
            _say("torch is not installed: the PyTorch baselines are skipped (pip install 'hanrt[export]')")
    env = environment()
    peak = None
    if not args.no_peak:
        _say("measuring the device peak ...")
        p = gpu_peak() if device.startswith("cuda") else None
        peak = (p or cpu_peak()).to_dict()
        _say(f"peak {peak['gflops']:.0f} GFLOP/s ({peak['what']})")
    src = resolve_model(model, checkpoint=checkpoint)
    try:
        res = run_bench(suite, src, image_file=image_file, peak=peak, env=env,
                        precision_files=_precision_files(args), device=device, progress=_say)
    finally:
        src.close()
    data = res.to_dict()
    print(markdown_table(data))
    if out is not None:
        files = write_all(data, out, plots=not args.no_plots, quality=quality)
        if not args.no_plots and not any(k in files for k in ("latency_vs_tile", "pareto")):
            _say("no plots written (matplotlib missing, or nothing to plot)")
        _say("wrote " + ", ".join(str(p) for p in files.values()))
    if not res.rows:
        raise UsageError("nothing was measured: every configuration was skipped (see the reasons above).")
    return 0


def _model_and_checkpoint(model: str | None, checkpoint: str | None) -> tuple[str, str | None]:
    """MODEL, or the bundled model (with its PyTorch weights beside it for the baselines)."""
    if model:
        return model, checkpoint
    from hanrt.upscaler import default_model_path

    path = default_model_path()
    pt = path.with_suffix(".pt")
    _say(f"no MODEL given: benchmarking the bundled {path.name}")
    return str(path), checkpoint or (str(pt) if pt.is_file() else None)


def _run_policy_cli(args: BenchRequest) -> int:
    from .policy import DEFAULT_SIZES, DEFAULT_TILES, policy_markdown, run_policy

    model, _ = _model_and_checkpoint(args.model, None)
    sizes = tuple(parse_size(s) for s in args.input) if args.input else DEFAULT_SIZES
    backends = args.backend or ["ort-cpu"]
    if len(backends) != 1:
        raise UsageError("--policy measures one --backend at a time.")
    margin = (args.margin or [None])[0]
    out = _out_dir(args.output)
    rows = run_policy(model, backend=backends[0], sizes=sizes, tiles=tuple(args.tile or DEFAULT_TILES), margin=margin,
                      repeats=args.iters or 3, say=_say)
    print(policy_markdown(rows))
    if out is not None:
        from hanrt.io.atomic import atomic_output

        with atomic_output(out / "policy.json") as tmp:
            Path(tmp).write_text(json.dumps(rows, indent=1), encoding="utf-8")
        _say(f"wrote {out / 'policy.json'}")
    return 0


#: What the self-ensemble's passes are, per size (:data:`hanrt.tiling.ENSEMBLES`), for eval's column notes.
ENSEMBLE_VIEWS = {2: "as is and mirrored", 4: "mirrored and flipped", 8: "mirrored, flipped and transposed"}


def split_ensemble(spec: str, *, option: str, form: str) -> tuple[str, int]:
    """``"fp32 whole x8"`` -> ``("fp32 whole", 8)``; no trailing ``xN``: 1 pass. An ``xN`` that is no
    self-ensemble size (:data:`hanrt.tiling.ENSEMBLES`) is a UsageError naming ``option`` and ``form``."""
    from hanrt.tiling import ENSEMBLES

    head, _, last = spec.strip().rpartition(" ")
    if not head or not (last[:1] == "x" and last[1:].isdigit()):
        return spec.strip(), 1
    n = int(last[1:])
    if n not in ENSEMBLES:
        sizes = "|".join(f"x{k}" for k in ENSEMBLES[1:])
        raise UsageError(f"{option}: {spec.strip()!r} is not {form} [{sizes}] ({sizes}: that many self-ensemble "
                         f"passes, averaged).")
    return head.strip(), n


def run_eval_cli(args: EvalRequest) -> int:
    from .bench import precision_path, resolve_model
    from .evaluate import Column, evaluate, load_dataset, summary_markdown, write_outputs

    say = lambda m: print(f"hanrt eval: {m}", file=sys.stderr, flush=True)  # noqa: E731
    from hanrt.models import resolve_model as resolve_name
    from hanrt.model_info import describe_margin
    from hanrt.upscaler import DEFAULT_TILE, Upscaler

    model = str(resolve_name(args.model))
    src = resolve_model(model)
    scale = src.shape.scale
    out = _out_dir(args.output)
    files = _precision_files(args)
    tile = args.tile if args.tile is not None else DEFAULT_TILE
    margin = args.margin  # None: each graph's recorded margin, else hanrt's default (resolve_margin)
    wanted = None  # (precision, whole|tiled, self-ensemble passes) per column asked for
    if args.columns:
        wanted = []
        form = "'<fp32|fp16|int8> <whole|tiled>'"
        for c in (c.strip() for c in args.columns.split(",")):
            if not c:
                continue
            head, n = split_ensemble(c, option="--columns", form=form)
            parts = head.split()
            if len(parts) != 2 or parts[0] not in ("fp32", "fp16", "int8") or parts[1] not in ("whole", "tiled"):
                raise UsageError(f"--columns: {c!r} is not {form} [x2|x4|x8] (xN: that many self-ensemble passes).")
            if (parts[0], parts[1], n) not in wanted:
                wanted.append((parts[0], parts[1], n))
    ups: list[Any] = []
    cols: list[Column] = []
    notes: list[str] = []
    try:
        for prec in ("fp32", "fp16", "int8"):
            path = precision_path(src.path, prec, files)
            kinds = [(k, 1) for k in ("whole", "tiled")] if wanted is None else [
                (k, passes) for p, k, passes in wanted if p == prec]
            if not kinds:
                continue
            if path is None:
                if wanted is not None or prec != "fp32":
                    notes.append(f"{prec}: no graph (pass --{prec} or export one with hanrt export --precision {prec}); column skipped")
                continue
            for kind, passes in kinds:
                up = Upscaler(path, backend=args.backend, tile=0 if kind == "whole" else tile, margin=margin,
                              batch=args.batch, ensemble=passes)
                ups.append(up)
                be = getattr(up.backend, "name", args.backend)
                if prec == "fp16" and be == "ort-cpu" and not any(n.startswith("fp16 on ort-cpu") for n in notes):
                    notes.append("fp16 on ort-cpu: ONNX Runtime's CPU provider computes FP16 graphs in FP32, so "
                                 "this column shows the graph's casts, not FP16 arithmetic (run it on a GPU).")
                detail = f"{be}, " + ("whole image" if kind == "whole" else
                                      f"tile {tile}, margin {describe_margin(up.margin, up.margin_source)}")
                if passes > 1:
                    detail += f", self-ensemble of {passes} passes ({ENSEMBLE_VIEWS[passes]}), averaged"
                cols.append(Column(f"{prec} {kind}" + (f" x{passes}" if passes > 1 else ""), up.upscale,
                                   precision=prec, tiled=kind == "tiled" and passes == 1, detail=detail,
                                   tiles=lambda h, w, up=up: up.plan(h, w).count))
        if not cols:
            raise UsageError("no model column to evaluate (see the notes above).")
        name, images = load_dataset(args.dataset, scale, limit=args.limit)
        say(f"{name}: {len(images)} images, x{scale}, columns: bicubic, " + ", ".join(c.name for c in cols))
        res = evaluate(name, images, cols, scale=scale, model=src.label,
                       crops_dir=(out / "crops") if (out is not None and not args.no_crops) else None, progress=say)
        res.notes.extend(notes)
    finally:
        for up in ups:
            up.close()
        src.close()
    print(summary_markdown(res))
    if out is not None:
        paths = write_outputs(res, out)
        say("wrote " + ", ".join(str(p) for p in paths.values()) + ("" if args.no_crops else f", {out / 'crops'}/*.png"))
    return 0


def run_binarize_cli(args: EvalRequest) -> int:
    """``hanrt eval --task binarize DIR``: see :mod:`hanrt_bench.binarize`."""
    from hanrt.models import BUNDLED, bundled_path
    from hanrt.upscaler import DEFAULT_TILE, Upscaler

    from .binarize import (comparison_figure, evaluate_binarization, load_pages, summarize, summary_markdown,
                           write_results)

    say = lambda m: print(f"hanrt eval: {m}", file=sys.stderr, flush=True)  # noqa: E731
    if args.models:  # a trailing xN: that model with an N-pass self-ensemble ("document x8")
        names = [m.strip() for m in args.models.split(",") if m.strip()]
    elif args.model:
        names = [args.model]
    else:  # every bundled model that is installed
        names = []
        for n in BUNDLED:
            try:
                bundled_path(n)
                names.append(n)
            except HanrtError:
                say(f"bundled model {n} is not installed; skipped")
    out = _out_dir(args.output)
    pages = load_pages(args.dataset, 4, limit=args.limit)
    tile = args.tile if args.tile is not None else DEFAULT_TILE
    ups: dict[str, Any] = {}
    try:
        for spec in names:  # margin None: each model's recorded margin, else hanrt's default (resolve_margin)
            n, passes = split_ensemble(spec, option="--models", form="'MODEL'")
            up = Upscaler(n, backend=args.backend, tile=tile, margin=args.margin, batch=args.batch, ensemble=passes)
            ups[(n if n in BUNDLED else Path(n).stem) + (f" x{passes}" if passes > 1 else "")] = up
            if up.scale != 4:
                raise UsageError(f"--task binarize uses the x4 protocol; model {n} is x{up.scale}.")
        clean = ", clean" if any(p.clean is not None for p in pages) else ""
        say(f"{len(pages)} pages; conditions: full{clean}, bicubic, " + ", ".join(ups))
        first: dict[str, Any] = {}

        def keep(page: str, cond: str, img: Any) -> None:
            if page == pages[0].name:
                first[cond] = img

        rows = evaluate_binarization(pages, {k: u.upscale for k, u in ups.items()},
                                     keep=keep if out is not None else None)
    finally:
        for u in ups.values():
            u.close()
    summary = summarize(rows)
    print(summary_markdown(summary))
    if out is not None:
        paths = write_results(out, rows, summary, {"dataset": str(args.dataset), "pages": len(pages),
                                                   "models": names, "tile": tile,
                                                   "margin": {k: u.margin for k, u in ups.items()},
                                                   "backend": args.backend})
        paths.append(comparison_figure(first, pages[0].gt, out / "compare.jpg"))
        say("wrote " + ", ".join(str(p) for p in paths))
    return 0
