"""Package a trained checkpoint as hanrt's bundled default model, with its model card.

``python -m hanrt_export.bundle CHECKPOINT [--dest runtime/hanrt/models]`` writes:

- ``hanrt_x4.onnx`` (float32 NCHW 0..255 I/O) and ``hanrt_x4_uint8.onnx`` (uint8 NHWC I/O),
  both through the parity-gated exporter;
- ``hanrt_x4.pt`` (hanrt checkpoint: weights and hyperparameters, loadable with weights_only);
- ``NOTICE`` (training-photo credits) and ``MODEL_CARD.md`` (data, recipe, steps, wall time, the
  E1 table measured here — bicubic vs the model, Y-PSNR/SSIM, shave = scale — model size,
  ONNX Runtime CPU latency per 128x128 tile, and the tiling margin).

The tiling margin is measured here too (:func:`record_margin`: tiled vs whole-image output on E1
photos, or on the held-out pages for a document model, by :mod:`hanrt_bench.tiling_study`'s rule)
and recorded in every graph's description, so the runtime tiles the model with the margin it needs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from hanrt.errors import HanrtError

from .checkpoint import load_checkpoint, save_checkpoint
from .data import LINE_ART, PACKAGES, PHOTO_FILES, SCREENS, notice_text
from .to_onnx import ExportOptions, export_onnx

log = logging.getLogger(__name__)

DEFAULT_DEST = Path(__file__).resolve().parents[2] / "runtime" / "hanrt" / "models"


def _ort_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def evaluate_e1(onnx_uint8: Path, scale: int) -> list[dict]:
    """Whole-image SR of every E1 photo through ONNX Runtime (uint8 graph): per-image scores."""
    from hanrt_bench.quality import bicubic_down, bicubic_up, load_e1, psnr_y, ssim_y

    sess = _ort_session(onnx_uint8)
    name = sess.get_inputs()[0].name
    rows = []
    for im in load_e1(scale):
        lr = bicubic_down(im.hr, scale)
        sr = sess.run(None, {name: lr[None]})[0][0]
        bic = bicubic_up(lr, scale)
        rows.append({
            "image": im.name, "size": f"{im.hr.shape[1]}x{im.hr.shape[0]}",
            "bicubic_psnr": psnr_y(bic, im.hr, shave=scale), "bicubic_ssim": ssim_y(bic, im.hr, shave=scale),
            "hanrt_psnr": psnr_y(sr, im.hr, shave=scale), "hanrt_ssim": ssim_y(sr, im.hr, shave=scale),
        })
    return rows


def tile_latency_ms(onnx_float: Path, tile: int = 128, repeats: int = 10, threads: int = 0) -> dict:
    sess = _ort_session(onnx_float, threads)
    name = sess.get_inputs()[0].name
    x = (np.random.default_rng(0).random((1, 3, tile, tile)) * 255).astype(np.float32)
    sess.run(None, {name: x})
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {name: x})
        ts.append((time.perf_counter() - t) * 1e3)
    return {"tile": tile, "median_ms": statistics.median(ts), "min_ms": min(ts), "repeats": repeats,
            "threads": threads or os.cpu_count()}


def _val_line(hist: list[dict], what: str = "photos") -> str:
    if not hist:
        return "(no validation history recorded)."
    best = max(hist, key=lambda h: h["val_psnr"])
    return (f"final validation Y-PSNR {hist[-1]['val_psnr']:.2f} dB vs bicubic {hist[-1]['bicubic_psnr']:.2f} dB "
            f"(best {best['val_psnr']:.2f} dB at step {best['step']}; held-out strips of the training {what}).")


def _hint(c: dict) -> str:
    return f"{c['n_resgroups']}x{c['n_resblocks']}x{c['n_feats']}"


_LOSS_NAMES = {"l1": "L1", "mse": "MSE", "charbonnier": "Charbonnier"}


def _loss_text(stages: list[dict]) -> str:
    """The Recipe's opening words: the loss every stage used, or L1 and where another was used."""
    kinds = [(st.get("train_config") or {}).get("loss", "l1") for st in stages if st.get("step") is not None]
    luma = any((st.get("train_config") or {}).get("luma_weight") for st in stages if st.get("step") is not None)
    if all(k == "l1" for k in kinds) and not luma:
        return "L1 loss on 0..255"
    return "L1 loss on 0..255 R, G, B (unless a stage below names another loss or a share on luma)"


def _stages_text(stages: list[dict], scale: int) -> str:
    """One sentence per training stage (a model fine-tuned or grown from another has several)."""
    out = []
    total_steps, total_s = 0, 0.0
    for i, st in enumerate(stages):
        tc, c = st.get("train_config") or {}, st["config"]
        what = "from scratch" if i == 0 and not tc.get("init") else (
            "grown from the previous stage, new blocks start as the identity" if tc.get("grow_blocks")
            else "fine-tuned")
        if "step" not in st or st.get("step") is None:
            out.append(f"Stage {i + 1}: {_hint(c)}, {st.get('origin', 'no training record')}.")
            continue
        steps = int(st["step"])
        mins = float(st.get("elapsed_s") or 0) / 60
        total_steps += steps
        total_s += float(st.get("elapsed_s") or 0)
        flat = (f", texture-biased sampling (patches with luma std < {tc['flat_std']:g} kept with "
                f"probability {tc.get('flat_keep', 1):g})" if tc.get("flat_std") else "")
        sched = f"cosine over a {tc['time_budget_s'] / 60:.0f}-min wall-clock budget" if tc.get("time_budget_s") \
            else "cosine over the steps"
        budget = float(tc.get("time_budget_s") or 0)
        if budget and mins * 60 < 0.95 * budget:  # stopped before its schedule ended: say where
            from .train import cosine_lr

            lr_then = cosine_lr(float(tc.get("lr", 0)), float(tc.get("lr_min", 0)), mins * 60 / budget)
            sched += f", stopped early ({mins:.0f} of its {budget / 60:.0f} min; learning rate then {lr_then:.2g})"
        if tc.get("loss", "l1") != "l1":
            flat += f", {_LOSS_NAMES.get(tc['loss'], tc['loss'])} loss"
        if tc.get("luma_weight"):
            flat += (f", {tc['luma_weight']:g} of the loss on luma (BT.601 Y) and the rest on R, G, B"
                     if tc["luma_weight"] < 1 else ", loss on luma (BT.601 Y) only")
        if tc.get("ema"):
            flat += (f", exponential moving average of the weights (decay {tc['ema']:g}): the average is the "
                     "stage's result")
        if tc.get("teacher"):
            flat += f", distilled ({_teacher_text(tc, stages[:i])})"
        if tc.get("targets"):
            flat += (", trained to restore: LR patches from each page, HR patches from the same place of its "
                     "clean scan (`--targets`), so validation is against the clean scans too")
        val = st.get("final_val")
        vtxt = (f"; validation {val['val_psnr']:.2f} dB vs bicubic {val['bicubic_psnr']:.2f} dB"
                if val else "")
        if val and val.get("val_psnr_raw") is not None:
            vtxt += f" (the last step's own weights: {val['val_psnr_raw']:.2f} dB)"
        p = int(tc.get("patch", 0))
        out.append(f"**Stage {i + 1}** ({_hint(c)}, {what}): {steps} steps in {mins:.0f} min, peak LR "
                   f"{tc.get('lr', '?')}, {tc.get('warmup', '?')} warm-up steps, {sched}, batch "
                   f"{tc.get('batch', '?')} of {p}x{p} LR patches (HR {p * scale}x{p * scale}){flat}{vtxt}.")
    if len(stages) > 1:
        out.append(f"In all **{total_steps} steps in {total_s / 60:.0f} min**.")
    return "\n\n".join(out) + "\n"


def _teacher_stage(tc: dict, before: list[dict]) -> int | None:
    """Which earlier stage's result (0-based) a distilled stage's teacher was, by sha256; None: another model."""
    sha = tc.get("teacher_sha256")
    return next((j for j, st in enumerate(before) if sha and st.get("source_sha256") == sha), None)


def _teacher_text(tc: dict, before: list[dict]) -> str:
    j = _teacher_stage(tc, before)
    who = f"stage {j + 1}'s result" if j is not None else f"`{tc['teacher']}` (sha256 {str(tc.get('teacher_sha256'))[:16]})"
    n, w = int(tc.get("teacher_ensemble", 1)), float(tc.get("teacher_weight", 1.0))
    what = f"its {n}-pass self-ensemble" if n > 1 else "its output"
    share = "the target is " + (f"{w:g} x {what} + {1 - w:g} x the true image" if w < 1 else what)
    took = f" (in {float(tc['teacher_s']) / 60:.0f} min)" if tc.get("teacher_s") is not None else ""
    return f"teacher {who}; {share}, made once{took} from each whole training image shrunk by the scale"


def _teacher_name(tc: dict, before: list[dict]) -> str:
    j = _teacher_stage(tc, before)
    return f"stage{j + 1}.pt" if j is not None else Path(str(tc["teacher"])).name


def _reproduce(stages: list[dict], domain: str = "photo") -> str:
    lines = []
    # a document model is a photo model fine-tuned on pages: its page stages are the last one and
    # every stage from the first whose recorded data folder differs from the first stage's
    datas = [str((st.get("train_config") or {}).get("data", "")) for st in stages]
    first_pages = next((i for i, d in enumerate(datas) if i and d != datas[0]), len(stages) - 1)
    for i, st in enumerate(stages):
        tc, c = st.get("train_config") or {}, st["config"]
        if "step" not in st or st.get("step") is None:
            continue
        data = ("pages/images" if domain == "document" and i >= first_pages else
                "data" if domain == "art" and i == len(stages) - 1 else "photos")
        cmd = f"hanrt train --data {data} --output {'han.pt' if i == len(stages) - 1 else f'stage{i + 1}.pt'}"
        if i == 0 or not tc.get("init"):
            cmd += (f" --resgroups {c['n_resgroups']} --resblocks {c['n_resblocks']} --feats {c['n_feats']}"
                    f" --reduction {c['reduction']}")
        else:
            prev = stages[i - 1]
            cmd += (f" --init stage{i}.pt" if prev.get("step") is not None
                    else f" --init PARENT.pt  # the checkpoint with sha256 {prev.get('source_sha256', '?')[:16]}")
            if tc.get("grow_blocks"):
                cmd += f" --grow-blocks {tc['grow_blocks']}"
        cmd += (f" --batch {tc.get('batch', 16)} --patch {tc.get('patch', 48)} --lr {tc.get('lr', 5e-4)}"
                f" --warmup {tc.get('warmup', 200)}")
        if tc.get("targets"):
            cmd += " --targets " + ("pages/clean" if domain == "document" else "targets")
        if tc.get("flat_std"):
            cmd += f" --flat-std {tc['flat_std']:g} --flat-keep {tc.get('flat_keep', 1):g}"
        if tc.get("loss", "l1") != "l1":
            cmd += f" --loss {tc['loss']}"
        if tc.get("luma_weight"):
            cmd += f" --luma-weight {tc['luma_weight']:g}"
        if tc.get("ema"):
            cmd += f" --ema {tc['ema']:g}"
        if tc.get("teacher"):
            cmd += (f" --teacher {_teacher_name(tc, stages[:i])} --teacher-ensemble {tc.get('teacher_ensemble', 1)}"
                    f" --teacher-weight {tc.get('teacher_weight', 1.0):g}")
        if list(tc.get("shrink", [0.25, 0.6])) != [0.25, 0.6] or tc.get("versions", 4) != 4:
            lo, hi = tc["shrink"]
            cmd += f" --shrink {lo:g} {hi:g} --versions {tc.get('versions', 4)}"
        if tc.get("precision", "auto") != "auto":
            cmd += f" --precision {tc['precision']}"
        if tc.get("time_budget_s"):
            cmd += f" --minutes {tc['time_budget_s'] / 60:.0f}"
        else:
            cmd += f" --steps {st['step']}"
        cmd += f" --seed {tc.get('seed', 0)} --threads 2"
        lines.append(f"`{cmd}`")
    return ",\n".join(lines)


def record_margin(f_float: Path, siblings: list[Path], *, pages: Path | None = None) -> str:
    """Measure the tiling margin of the freshly exported ``f_float`` (tiled vs whole-image output,
    :mod:`hanrt_bench.tiling_study`'s rule, on E1 photos -- or on ``pages``' held-out document pages)
    and record it in ``f_float`` and its ``siblings`` (metadata only). Returns the card's sentence."""
    from hanrt_bench.tiling_study import (RECORD_LR_SCALE, RECORD_MARGINS, RECORD_TILES, STUDY_PHOTOS, choose_margin,
                                          criterion_note, format_table, load_images, margin_text, no_margin_note,
                                          run_study, worst_db, write_margin, write_margin_note)

    images = load_images(pages / "images", RECORD_LR_SCALE) if pages is not None else None
    rows = run_study(f_float, names=STUDY_PHOTOS, images=images,
                     lr_scale=RECORD_LR_SCALE, threads=0, tiles=RECORD_TILES, margins=RECORD_MARGINS)
    # the study's rows, for the reader of the bundle log (the card keeps the chosen margin's figures)
    log.info("tiling study, tiled vs whole-image output:\n%s",
             format_table(rows, tiles=RECORD_TILES, margins=RECORD_MARGINS))
    worst = worst_db(rows)
    margin = choose_margin(worst, tiles=RECORD_TILES, margins=RECORD_MARGINS)
    what = (f"{len(rows['lr_shapes'])} held-out " + ("pages" if pages is not None else "E1 photos")
            + f", LR by bicubic /{RECORD_LR_SCALE}")
    if margin is not None:
        write_margin(f_float, margin, siblings,
                     criterion_note(worst, margin, tiles=RECORD_TILES, margins=RECORD_MARGINS, what=what))
    else:  # say so in the graphs too, so `hanrt info` does not call the model unmeasured
        write_margin_note(f_float, no_margin_note(worst, tiles=RECORD_TILES, margins=RECORD_MARGINS, what=what),
                          siblings)
    return margin_text(margin, worst, tiles=RECORD_TILES, margins=RECORD_MARGINS, what=what)


def _table(rows: list[dict]) -> str:
    out = ["| image | size (HR) | bicubic PSNR / SSIM | hanrt PSNR / SSIM | gain (dB) |",
           "| --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['image']} | {r['size']} | {r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f} | "
                   f"{r['hanrt_psnr']:.2f} / {r['hanrt_ssim']:.4f} | {r['hanrt_psnr'] - r['bicubic_psnr']:+.2f} |")
    mb = np.mean([r["bicubic_psnr"] for r in rows])
    ms = np.mean([r["hanrt_psnr"] for r in rows])
    out.append(f"| **mean** | | **{mb:.2f} / {np.mean([r['bicubic_ssim'] for r in rows]):.4f}** | "
               f"**{ms:.2f} / {np.mean([r['hanrt_ssim'] for r in rows]):.4f}** | **{ms - mb:+.2f}** |")
    return "\n".join(out)


def _export_precision(checkpoint: Path, out: Path, precision: str, calib: str) -> None:
    """FP16 / INT8 graphs through the same code path as ``hanrt export --precision``."""
    from hanrt.cli import main as hanrt_main

    rc = hanrt_main(["export", "--checkpoint", str(checkpoint), "--output", str(out), "--precision", precision,
                     "--calib", str(calib), "--overwrite", *(["--fp16-retries", "3"] if precision == "fp16" else [])])
    if rc != 0:
        raise HanrtError(f"hanrt export --precision {precision} failed with exit code {rc}")


_LIMITS = {
    "photo": """Trained for x{scale} bicubic degradation of clean photos: it sharpens edges and textures that
bicubic blurs, but it does not remove noise, JPEG blocking or camera blur, and a model this small
is well below full HAN (which needs official weights: `hanrt export --checkpoint HAN_BIX4.pt`).""",
    "document": """Trained and measured on generated pages only: no real scanned or historical pages were
available where it was trained, so how much of the gain carries over to real scans is not
measured. It is tuned for text on paper (x{scale} bicubic shrinking of pages that carry stains,
noise and JPEG); on photos it is worse than the photo model (E1 above). Fine-tune it on your own
pages with `hanrt train --init hanrt_x4_document.pt`.""",
    "art": """Trained for x{scale} bicubic degradation of clean images (photos, drawings, generated
screenshots): it does not remove noise, JPEG blocking or blur. Its drawings are openclipart's
(mostly flat colours and outlines) and its screenshots are generated from a handful of fonts and
layouts, so comics and real screenshots of other styles are not measured. It takes more CPU time
per pixel than the photo model (16 blocks per group instead of 8).""",
}


def _compile_text(speed: dict) -> str:
    """One sentence on torch.compile in the last stage (``hanrt train --compile``), from its recipe."""
    if "compile" not in speed:
        return "torch.compile: not used (`hanrt train` had no --compile when this stage ran)."
    if speed.get("compile_probe"):
        p = speed["compile_probe"]
        return (f"torch.compile ({speed['compile']}): eager {p['eager_s']:.2f}, compiled {p['compiled_s']:.2f} s/step "
                f"(compiling {p['compile_s']:.0f} s) -> **{'compiled' if speed.get('compiled') else 'eager'}**"
                + (f" ({speed['compile_note']})" if speed.get("compile_note") else "") + ".")
    if speed.get("compiled"):
        return f"torch.compile ({speed['compile']}): compiled."
    return f"torch.compile ({speed['compile']}): eager" + (f", {speed['compile_note']}" if speed.get("compile_note") else "") + "."


def _document_sections(tc: dict, pages: Path | None, f_float: Path, dest: Path,
                       data: str | Path | None = None) -> tuple[str, str, dict | None]:
    """Training-data text, binarization section and results of the document model."""
    from hanrt_bench.binarize import evaluate_binarization, load_pages, summarize, summary_markdown
    from hanrt_bench.docpages import notice_lines

    from hanrt.models import bundled_path
    from hanrt.upscaler import Upscaler

    made = ""
    data_dir = Path(str(data or tc.get("data", "")))
    seeds: list[int] = []
    for meta_file in (data_dir / "pages.json", data_dir.parent / "pages.json"):
        if meta_file.is_file():
            seeds = [p["seed"] for p in json.loads(meta_file.read_text())["pages"]]
            break
    else:  # pages named by the generator: page_<seed>.png
        seeds = sorted(int(m.group(1)) for p in (data_dir.iterdir() if data_dir.is_dir() else ())
                       if (m := re.fullmatch(r"page_(\d+)\.png", p.name)))
    clean = " --clean" if tc.get("targets") else ""
    if seeds:
        made = (f"Training used {len(seeds)} pages, seeds {min(seeds)}..{max(seeds)} (`python -m hanrt_bench.docpages "
                f"pages --pages {len(seeds)} --seed {min(seeds)}{clean}`).")
    if clean:
        made += (" The last stage learned to **restore** as it enlarges: its input is the degraded page "
                 "(shrunk 4x by bicubic), its target the page's clean scan (`pages/clean`: the same paper, "
                 "fibres, stains, show-through, faded and bled ink, without the scanner's blur, noise and "
                 "JPEG). So its output is sharper and cleaner than the page it was made from, and it can "
                 "binarize better than that page does at full resolution.")
    data = f"""Pages generated by `python -m hanrt_bench.docpages DIR --pages N --seed S` (numpy, Pillow,
scipy; no downloads): text in {len(notice_lines())} Debian font packages' faces (print and handwriting-like,
several sizes; list and licences in `NOTICE_document`) rendered at twice the page resolution, ink
bleed, faded ink, show-through of a mirrored verso, stains, fibres, blur, noise and JPEG, shrunk
with bicubic to 960x1280. {made} Each page is shrunk by a random factor in
{tc.get('shrink')} ({tc.get('versions')} versions) before patches are cut; the bottom
{int(100 * tc.get('val_fraction', 0.1))}% of every version is held out for validation."""
    if pages is None:
        return data, "", None
    ps = load_pages(pages)
    ups = {}
    try:
        ups["photo"] = Upscaler(bundled_path("photo"), backend="ort-cpu")
        ups["document"] = Upscaler(f_float, backend="ort-cpu")
        rows = evaluate_binarization(ps, {k: u.upscale for k, u in ups.items()})
    finally:
        for u in ups.values():
            u.close()
    summ = summarize(rows)
    sec = f"""## Binarization of held-out generated pages (never trained on)
{len(ps)} pages made with seeds {ps[0].name.split('_')[-1]}..{ps[-1].name.split('_')[-1]} (training used seeds from 1000; the same
fonts), shrunk 4x with bicubic, enlarged back 4x, binarized (scikit-image Otsu; Sauvola window 25,
k 0.2, R 128) and scored against the exact ink masks; means over the pages (`hanrt eval --task
binarize`, inference with hanrt's default tiling through ONNX Runtime CPU). F-measure and
pseudo-F-measure in %, DRD lower is better.

{summary_markdown(summ)}
"""
    return data, sec, {"summary": summ, "pages": len(ps)}


def recorded_files(stages: list[dict]) -> list[str] | None:
    """The file names every training stage of a checkpoint recorded (``train_config["data_files"]``,
    written by ``hanrt train``), united; None if a stage that trained records none (older stages),
    since then the credits cannot be read off the checkpoint."""
    names: dict[str, None] = {}
    for st in stages:
        if st.get("step") is None:  # an external checkpoint: nothing trained here to credit
            continue
        files = (st.get("train_config") or {}).get("data_files")
        if files is None:
            return None
        names.update((Path(f).name, None) for f in files)
    return list(names)


def _training_files(folder: Path) -> dict[str, list[Path]]:
    """The images under a ``--fetch-data`` layout (or a subset of it), by kind (subfolder; files
    directly in ``folder`` count as photos)."""
    from .train import find_images

    out: dict[str, list[Path]] = {k: [] for k in ("photos", "lineart", "screens")}
    for p in find_images(folder):
        rel = p.relative_to(folder).parts
        out[rel[0] if len(rel) > 1 and rel[0] in out else "photos"].append(p)
    return out


def _data_counts(used: dict[str, list[Path]] | None) -> dict[str, str]:
    """Card text per kind: the whole fetched set (``used`` None), or the files and megapixels of
    the folder trained on, with how many of the set were left out (held out for evaluation)."""
    from PIL import Image

    full = {"photos": len(PHOTO_FILES), "lineart": len(LINE_ART), "screens": len(SCREENS)}
    if used is None:
        return {**{k: str(v) for k, v in full.items()}, "note": ""}
    out: dict[str, str] = {}
    left = []
    for kind, files in used.items():
        mp = 0.0
        for p in files:
            with Image.open(p) as im:
                mp += im.width * im.height / 1e6
        out[kind] = f"{len(files)} ({mp:.1f} MP)"
        if 0 < len(files) < full[kind]:  # a kind not trained on at all was left out, not held out
            left.append(f"{full[kind] - len(files)} of the {full[kind]} {kind}")
    out["note"] = f" ({', '.join(left)} held out for evaluation, not trained on)" if left else ""
    return out


def _photo_sources(used: dict[str, list[Path]] | None) -> str:
    """The packages (and their licences) of the photos trained on: the ones in ``used`` that the
    fetch table knows by name, all of them when nothing is known."""
    names = {p.name for p in (used or {}).get("photos", [])}
    files = [f for f in PHOTO_FILES if f.out_name in names] or list(PHOTO_FILES)
    pkgs = list(dict.fromkeys(f.package for f in files))
    lics = sorted({f.license for f in files})
    lics = ", ".join(lics[:-1]) + (" and " if len(lics) > 1 else "") + lics[-1]
    where = ", ".join(f"`{p}` {PACKAGES[p].version}" for p in pkgs)
    return f"Debian's {where} ({lics} only)" if len(pkgs) == 1 else f"Debian packages {where} ({lics})"


def _kinds_text(used: dict[str, list[Path]] | None, counts: dict[str, str]) -> tuple[str, int]:
    """The card's list of the kinds of training data (only the kinds trained on) and their number."""
    kinds = {"photos": f"{counts['photos']} photos from {_photo_sources(used)}",
             "lineart": f"{counts['lineart']} drawings and cartoons from `openclipart-png` "
                        f"{PACKAGES['openclipart-png'].version} (public-domain dedication; transparency flattened onto white)",
             "screens": f"{counts['screens']} screenshot-like images (rendered at 2x) generated from seeds by "
                        f"`hanrt_export.screens`"}
    listed = [v for k, v in kinds.items() if used is None or used[k]] or list(kinds.values())
    return ", ".join(listed[:-1]) + (" and " if len(listed) > 1 else "") + listed[-1], len(listed)


def bundle(checkpoint: str | Path, dest: str | Path = DEFAULT_DEST, *, name: str = "hanrt_x4",
           calib: str | Path | None = None, parent: str | Path | None = None, domain: str = "photo",
           pages: str | Path | None = None, data: str | Path | None = None) -> dict:
    """``parent``: the checkpoint this one was fine-tuned or grown from, for checkpoints written
    before training recorded its lineage itself (read before anything in ``dest`` is replaced).
    ``domain``: ``photo``, ``art`` or ``document`` (the names of :data:`hanrt.models.BUNDLED`: they decide
    the card's and NOTICE's file names and the training-data text); ``pages``: for a document
    model, a folder of held-out pages with masks, for the card's binarization table. ``data``: the
    folder the checkpoint was trained on (a ``hanrt train --fetch-data`` layout, possibly a subset):
    the card counts its files and megapixels per kind and NOTICE lists only those files; without
    it, the whole fetched set is described."""
    from hanrt.models import BUNDLED

    from .train import init_lineage

    if domain not in BUNDLED:
        raise HanrtError(f"--domain {domain!r}: one of {', '.join(BUNDLED)}.")
    entry = BUNDLED[domain]

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    src = load_checkpoint(checkpoint)
    meta = dict(src.meta)
    if parent is not None:
        if "lineage" in meta:
            raise HanrtError(f"{checkpoint} already records its lineage; drop --parent.")
        meta["lineage"] = init_lineage(load_checkpoint(parent))
    # Save the shipped weights first and export every graph from that very file, so each graph's
    # recorded source sha256 is the sha256 of the shipped hanrt_x4.pt.
    train_meta = {k: meta[k] for k in ("step", "elapsed_s", "history", "train_config", "lineage") if k in meta}
    pt = dest / f"{name}.pt"
    save_checkpoint(src.model, pt, **train_meta)
    ck = load_checkpoint(pt)
    cfg = ck.config
    f_float = dest / f"{name}.onnx"
    f_u8 = dest / f"{name}_uint8.onnx"
    r1 = export_onnx(ck.model, f_float, options=ExportOptions(io="float"), source_sha256=ck.sha256,
                     source=pt.name, overwrite=True)
    r2 = export_onnx(ck.model, f_u8, options=ExportOptions(io="uint8"), source_sha256=ck.sha256,
                     source=pt.name, overwrite=True)
    used = _training_files(Path(data)) if data is not None and domain != "document" else None
    recorded = recorded_files([*meta.get("lineage", []), meta])
    if recorded is None and (domain == "document" or used is None):
        log.warning("some training stages of %s record no file list (trained before hanrt recorded one): "
                    "NOTICE credits every file of the kinds it names; check it against what they trained on",
                    checkpoint)
    # a document model credits the photos of the photo model it was fine-tuned from (the pages are ours)
    if domain == "document":
        notice = notice_text(kinds=("photos",), used=recorded)
    else:
        notice = notice_text(used=[p.name for ps in used.values() for p in ps] if used is not None else recorded)
    if domain == "document":
        from hanrt_bench.docpages import notice_lines

        notice = ("hanrt bundled model hanrt_x4_document: training data credits\n\n"
                  "Fine-tuned from the photo model (hanrt_x4), whose training photos are credited below, on\n"
                  "document pages generated by hanrt_bench.docpages with text rendered in these fonts (Debian\n"
                  "packages, version used, licence; the fonts are not redistributed with hanrt):\n\n"
                  + "\n".join(notice_lines()) + "\n\n" + "-" * 70 + "\n\n" + notice)
    (dest / entry.notice).write_text(notice)
    extra_files = ""
    if calib:
        for prec in ("fp16", "int8"):
            _export_precision(pt, dest / f"{name}_{prec}.onnx", prec, str(calib))
        extra_files = (f", `{name}_fp16.onnx` (FP16 mixed precision: layer attention and pools FP32) and "
                       f"`{name}_int8.onnx` (INT8 Q/DQ), both calibrated on crops of the training "
                       f"{'pages' if domain == 'document' else 'photos'}")
    margin_line = record_margin(f_float, [f_u8, *(dest / f"{name}_{p}.onnx" for p in ("fp16", "int8") if calib)],
                                pages=Path(pages) if domain == "document" and pages else None)
    rows = evaluate_e1(f_u8, cfg.scale)
    lat = tile_latency_ms(f_float)
    n_params = sum(p.numel() for p in ck.model.parameters())
    hist = meta.get("history", [])
    tc = meta.get("train_config", {})
    stages = [*meta.get("lineage", []), {"config": cfg.to_dict(), "step": meta.get("step"),
                                         "elapsed_s": meta.get("elapsed_s"), "train_config": tc,
                                         "final_val": hist[-1] if hist else None}]
    mean_gain = float(np.mean([r["hanrt_psnr"] - r["bicubic_psnr"] for r in rows]))
    counts = _data_counts(used)
    kinds_text, n_kinds = _kinds_text(used, counts)
    data_text = f"""{["Training images", "Two kinds of images", "Three kinds of images"][n_kinds - 1]} (credits, \
licences and sha256 of every file in `NOTICE`), fetched with
`hanrt train --fetch-data DIR` (apt-get download + dpkg -x; licences read from each package's
copyright file, CC0 / CC-BY / public domain only; sha256-checked): {kinds_text}{counts['note']}. Each image is \
shrunk by a random factor in
{tc.get('shrink', '(0.25, 0.6)')} ({tc.get('versions', 4)} versions each) before patches are cut,
which removes JPEG noise; the bottom {int(100 * tc.get('val_fraction', 0.1))}% of every version is
held out for validation."""
    bin_text, bin_res = "", None
    if domain == "document":
        data_text, bin_text, bin_res = _document_sections(tc, Path(pages) if pages else None, f_float, dest, data)
    speed = tc.get("speed") or {}
    speed_text = ""
    if speed.get("step_s"):
        speed_text = ("\nTraining-step arithmetic chosen by measurement at the start of the last stage (median s/step "
                      "over 3 interleaved steps of the real model and batch): "
                      + ", ".join(f"{m} {t:.2f}" for m, t in speed["step_s"].items())
                      + f" -> **{speed['mode']}** (CPU capability {speed.get('cpu_capability', '?')}).\n")
    elif speed.get("mode"):
        speed_text = f"\nTraining-step arithmetic: {speed['mode']} (forced).\n"
    if speed_text:
        speed_text = speed_text[:-1] + " " + _compile_text(speed) + "\n"
    card = f"""# hanrt bundled model: `{name}`

HAN (Holistic Attention Network, arXiv 2008.08767), same architecture as the official model with
smaller hyperparameters: **{cfg.n_resgroups} residual groups x {cfg.n_resblocks} blocks x
{cfg.n_feats} features**, reduction {cfg.reduction}, x{cfg.scale}; {n_params / 1e6:.3f} M parameters.
Files: `{f_float.name}` (float32 NCHW 0..255 I/O, {f_float.stat().st_size / 1e6:.2f} MB),
`{f_u8.name}` (uint8 NHWC I/O), `{name}.pt` (PyTorch weights, hanrt checkpoint format){extra_files}.
Export parity (ONNX Runtime vs PyTorch, max abs on 0..255): float {r1.max_abs_diff:.2g}, uint8 {r2.max_abs_diff:.2g}.
Every graph passed `hanrt lint` when exported (TensorRT 10.3's documented ONNX support: a static
check, not a build; `hanrt info` shows the result).

## Training data
{data_text}

## Recipe
{_loss_text(stages)}, Adam (0.9, 0.999), linear warm-up then cosine decay of the learning rate,
LR patches made from HR patches by Pillow bicubic, random flips and 90-degree rotations, on a
shared 2-core CPU ({platform.processor() or platform.machine()}). {_stages_text(stages, cfg.scale)}
{_val_line(hist, 'pages' if domain == 'document' else 'photos')}
{speed_text}
Reproduce: `hanrt train --fetch-photos photos` (keep only the photos `NOTICE` credits: the set has grown since){' and `hanrt train --fetch-data data` (then hold out what you evaluate on)' if domain == 'art' else ''}, then
{_reproduce(stages, domain)}
and `python -m hanrt_export.bundle han.pt --calib {'pages/images' if domain == 'document' else 'photos'}{' --domain document --name ' + name + ' --pages heldout' if domain == 'document' else ''}{' --domain art --name ' + name + ' --data data' if domain == 'art' else ''}`.

{bin_text}
## E1: held-out photos (never trained on)
scikit-image's astronaut, camera, chelsea, coffee, rocket, coins, moon, brick, grass, gravel,
hubble_deep_field and matplotlib's grace_hopper (CC0 / public domain). Protocol: HR modcropped to
x{cfg.scale}, LR by Pillow bicubic, whole-image inference (ONNX Runtime CPU, uint8 graph), Y channel
(BT.601), {cfg.scale} pixels shaved, SSIM with an 11x11 Gaussian window. Mean gain over bicubic:
**{mean_gain:+.2f} dB**.

{_table(rows)}

## Tiling margin
{margin_line}

## Speed
ONNX Runtime {__import__('onnxruntime').__version__} CPU, one 128x128 input tile (512x512 output),
{lat['threads']} threads: median **{lat['median_ms']:.0f} ms** (min {lat['min_ms']:.0f} ms, {lat['repeats']} runs),
measured while bundling on this shared machine.

## Limits
{_LIMITS[domain].format(scale=cfg.scale)}
"""
    (dest / entry.card).write_text(card)
    summary = {"rows": rows, "latency": lat, "mean_gain_db": mean_gain, "params": n_params,
               "steps": meta.get("step"), "elapsed_s": meta.get("elapsed_s")}
    if bin_res is not None:
        summary["binarize"] = bin_res
    (dest / ("e1_results.json" if domain == "photo" else f"{domain}_results.json")).write_text(
        json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dest", default=str(DEFAULT_DEST))
    ap.add_argument("--name", default="hanrt_x4")
    ap.add_argument("--calib", help="photo folder: also write FP16 and INT8 graphs calibrated on it")
    ap.add_argument("--domain", default="photo", help="photo (default), art or document: card and NOTICE names and text")
    ap.add_argument("--pages", help="--domain document: held-out pages with masks for the binarization table")
    ap.add_argument("--data", help="the folder the checkpoint was trained on (a --fetch-data layout or a subset): "
                                   "the card counts its files per kind and NOTICE lists only them")
    ap.add_argument("--parent", help="checkpoint this one was fine-tuned/grown from, if it does not record "
                    "its lineage itself (read before the destination is overwritten)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    s = bundle(a.checkpoint, a.dest, name=a.name, calib=a.calib, parent=a.parent, domain=a.domain, pages=a.pages,
               data=a.data)
    sys.stdout.write(json.dumps({k: v for k, v in s.items() if k != "rows"}, indent=1) + "\n")
    sys.stdout.write(_table(s["rows"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
