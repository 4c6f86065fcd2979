"""Stream a folder of low-resolution scans through hanrt.pipeline: upscale 4x, then binarize.

Each page is read, upscaled by the bundled document model (or any model), and handed to a
callback sink that binarizes it (scikit-image Otsu or Sauvola) and writes the ink mask as a PNG
(ink black, background white; written atomically) — reading, inference and binarizing run
concurrently in the pipeline's three stages.

    python -m hanrt_bench.docpages pages --pages 4 --masks           # example pages + masks
    python examples/binarize_scans.py pages/images masks/ --shrink    # shrink 4x first, as a test
    python examples/binarize_scans.py my_scans/ masks/ --model document --method sauvola

Needs scikit-image (``pip install 'hanrt[bench]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from hanrt.io.frames import Frame
from hanrt.io.images import IMAGE_SUFFIXES, read_rgb8, write_image
from hanrt.pipeline import Pipeline
from hanrt.upscaler import Upscaler
from hanrt_bench.binarize import binarize


def pages(files: list[Path], shrink: bool) -> Iterator[Frame]:
    """Frames from page files, index = position in ``files``."""
    for i, f in enumerate(files):
        img = read_rgb8(f)
        if shrink:  # make a low-resolution scan out of a full-resolution page (for trying it out)
            h, w = img.shape[0] // 4, img.shape[1] // 4
            img = np.asarray(Image.fromarray(img[:h * 4, :w * 4]).resize((w, h), Image.BICUBIC))
        yield Frame(image=img, index=i)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scans", help="folder of low-resolution page images")
    ap.add_argument("output", help="folder for the ink masks (NAME.png)")
    ap.add_argument("--model", default="document", help="photo, document (default) or a model file")
    ap.add_argument("--method", default="otsu", choices=["otsu", "sauvola"])
    ap.add_argument("--shrink", action="store_true", help="shrink each page 4x first (to try it on full-size pages)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    files = sorted(p for p in Path(a.scans).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"error: no images in {a.scans}", file=sys.stderr)
        return 2
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)

    def sink(frame: Frame) -> None:  # runs in the pipeline's writer stage
        ink = binarize(frame.image, a.method)
        write_image(out / f"{files[frame.index].stem}.png", np.where(ink, 0, 255).astype(np.uint8),
                    overwrite=a.overwrite)

    with Upscaler(a.model, backend=a.backend) as up:
        p = Pipeline(pages(files, a.shrink), up, sink)
        p.run()
    s = p.stats
    print(f"{s.frames_out} pages binarized into {out} ({s.wall_s:.1f} s, model time {s.compute_s:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
