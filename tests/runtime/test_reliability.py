"""Issue 12: the faults and bad inputs a new user hit, one test (or more) per finding.

Each of these failed on the code before the fix (see the issue's numbering in the test names).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanrt.cli import main
from hanrt.errors import OutputError, UsageError
from hanrt.io.atomic import atomic_output
from hanrt.io.images import read_image, write_image
from hanrt_testkit import (IMPORT_BLOCKER, ROOT, hanrt_env, hanrt_proc, make_test_video, run_hanrt,
                           temporaries)

pytest.importorskip("onnxruntime")

FAST = ["--backend", "ort-cpu", "--threads", "1", "--tile", "32", "--margin", "4"]


def _frames_of(path) -> int:
    with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1))


@pytest.fixture()
def a_png(tmp_path, photo_small):
    p = tmp_path / "a.png"
    Image.fromarray(photo_small).save(p)
    return p


def make_gif(path, photo, frames: int = 3) -> Path:
    ims = [Image.fromarray(np.roll(photo[:24, :32], 4 * i, axis=1)) for i in range(frames)]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=[80, 120, 200][:frames], loop=0)
    return path


# --- 1: JPEG on a full disk -------------------------------------------------------------------

def test_1_jpeg_on_a_full_disk_fails_and_keeps_the_existing_file(tmp_path, a_png, tiny_onnx):
    out = tmp_path / "out.jpg"
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(out, quality=95)
    before = out.read_bytes()
    rc, _, err = run_hanrt(["upscale", a_png, "-o", out, "--overwrite", "-m", tiny_onnx, *FAST], fsize=8000)
    assert rc == 4, err
    assert "File too large" in err and "Traceback" not in err
    assert out.read_bytes() == before  # the good file is not replaced by a truncated one
    assert temporaries(tmp_path) == []


# --- 2: animated GIF; suffix/codec mismatches -------------------------------------------------

def test_2_an_animated_gif_is_upscaled_as_an_animation_in_a_batch(tmp_path, photo, tiny_onnx):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(photo[:20, :24]).save(d / "p1.png")
    Image.fromarray(photo[40:60, :24]).save(d / "p2.png")
    make_gif(d / "anim.gif", photo)
    out = tmp_path / "out"
    assert main(["-q", "upscale", str(d), "-o", str(out), "-m", str(tiny_onnx), *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["anim.gif", "p1.png", "p2.png"]
    with Image.open(out / "anim.gif") as im:
        assert im.size == (128, 96) and im.n_frames == 3
        durations = []
        for i in range(3):
            im.seek(i)
            durations.append(im.info["duration"])
        assert durations == [80, 120, 200] and im.info.get("loop") == 0


def test_2_an_animated_gif_to_a_still_format_is_refused_before_any_work(tmp_path, photo, tiny_onnx, capsys):
    gif = make_gif(tmp_path / "anim.gif", photo)
    rc = main(["upscale", str(gif), "-o", str(tmp_path / "x.png.jpg"), "-m", str(tiny_onnx), *FAST])
    assert rc == 2 and "animation (3 frames)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif"]
    # .png is an animation format (APNG): written, not a folder
    assert main(["-q", "upscale", str(gif), "-o", str(tmp_path / "x.png"), "-m", str(tiny_onnx), *FAST]) == 0
    assert (tmp_path / "x.png").is_file() and _frames_of(tmp_path / "x.png") == 3


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=6, width=32, height=24, audio=False)


def test_2_a_video_to_gif_is_refused_and_to_webm_gets_a_webm_codec(tmp_path, short_clip, tiny_onnx, capsys):
    rc = main(["upscale", str(short_clip), "-o", str(tmp_path / "x.gif"), "-m", str(tiny_onnx), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "does not encode video as GIF" in err
    assert list(tmp_path.iterdir()) == []
    rc = main(["-q", "upscale", str(short_clip), "-o", str(tmp_path / "x.webm"), "-m", str(tiny_onnx), *FAST])
    assert rc == 0
    import av

    with av.open(str(tmp_path / "x.webm")) as c:
        assert c.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
        assert sum(1 for _ in c.decode(video=0)) == 6
    rc = main(["stream", str(short_clip), "-o", str(tmp_path / "y.webm"), "--codec", "libx264", "-m",
               str(tiny_onnx), *FAST])
    assert rc == 2 and "does not support" in capsys.readouterr().err and not (tmp_path / "y.webm").exists()


# --- 3: SIGTERM on image runs -----------------------------------------------------------------

def _batch(folder: Path, photo, n: int, side: int = 160) -> Path:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.roll(photo, 37 * i, axis=0)[:side, :side]).save(folder / f"img{i:02d}.png")
    return folder


def test_3_sigterm_on_an_image_batch(tmp_path, photo, tiny_onnx):
    src = _batch(tmp_path / "in", photo, 8)
    out = tmp_path / "out"
    p = hanrt_proc(["upscale", src, "-o", out, "-m", tiny_onnx, *FAST])
    try:
        line = ""
        while "wrote" not in line and p.poll() is None:
            line = p.stderr.readline()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, err
    m = re.search(r"stopped by SIGTERM: (\d+) of 8 files upscaled", err)
    assert m, err
    done = sorted(out.iterdir())
    assert temporaries(tmp_path) == [] and len(done) == int(m.group(1)) >= 1
    for f in done:
        assert read_image(f).pixels.shape == (640, 640, 3)


# --- 4: runaway resources ---------------------------------------------------------------------

@pytest.mark.parametrize("opt,value,text", [
    ("--threads", "100000", "--threads must be 0"), ("--threads", "-1", "--threads must be 0"),
    ("--max-pixels", "-1", "--max-pixels must be >= 0"), ("--quality", "999", "--quality must be 1..100"),
    ("--quality", "0", "--quality must be 1..100"), ("--batch", "0", "--batch must be 1"),
    ("--tile", "-5", "--tile must be 0"), ("--margin", "-1", "--margin must be 0"),
])
def test_4_option_ranges(tmp_path, a_png, tiny_onnx, capsys, opt, value, text):
    rc = main(["upscale", str(a_png), "-o", str(tmp_path / "x.png"), "-m", str(tiny_onnx), *FAST, opt, value])
    assert rc == 2 and text in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_4_whole_image_beyond_memory_is_refused_with_the_estimate_and_the_fix(tmp_path, tiny_onnx, capsys):
    big = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000), (30, 60, 90)).save(big)  # compresses to a few kB
    rc = main(["upscale", str(big), "-o", str(tmp_path / "x.png"), "-m", str(tiny_onnx), "--backend", "ort-cpu",
               "--threads", "1", "--tile", "0"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(r"needs about [\d.]+ GB of memory .* only [\d.]+ GB is available .*--tile 128", err), err


def test_4_a_video_whose_queues_cannot_fit_is_refused_before_decoding(tmp_path, short_clip, tiny_onnx, capsys):
    rc = main(["stream", str(short_clip), "-o", str(tmp_path / "v.mp4"), "-m", str(tiny_onnx), *FAST,
               "--queue", "100000000"])
    assert rc == 2 and "of memory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_4_the_memory_estimate_names_estimate_limit_and_option():
    from hanrt.model_info import ModelInfo
    from hanrt.resources import check_memory, estimate_run_bytes

    info = ModelInfo(scale=4, hyperparameters={"n_feats": 32})
    need = estimate_run_bytes(info, height=9000, width=9000, channels=3, itemsize=1, tile_h=9000, tile_w=9000, batch=1)
    assert need > 500e9  # activations of a whole 9000x9000 image: ~8.9 kB a pixel
    with pytest.raises(UsageError, match=r"needs about .* GB .* only 24.00 GB is available \(test\)"):
        check_memory(need, what="x", whole_image=True, available=(24_000_000_000, "test"))
    tiled = estimate_run_bytes(info, height=9000, width=9000, channels=3, itemsize=1, tile_h=128, tile_w=128, batch=1)
    check_memory(tiled, what="x", whole_image=False, available=(24_000_000_000, "test"))  # fits
    # a self-ensemble adds one float32 sum of the output's colour per image in flight
    kw = dict(height=1000, width=500, itemsize=1, tile_h=128, tile_w=128, batch=1)
    one = estimate_run_bytes(info, channels=4, **kw)
    assert estimate_run_bytes(info, channels=4, ensemble=4, **kw) - one == 1000 * 500 * 16 * 3 * 4
    assert estimate_run_bytes(info, channels=4, ensemble=8, in_flight=3, **kw) - one == 3 * 1000 * 500 * 16 * 3 * 4
    assert (estimate_run_bytes(info, channels=2, ensemble=2, **kw)
            - estimate_run_bytes(info, channels=2, **kw)) == 1000 * 500 * 16 * 4  # grey + alpha: one channel


# --- 5: video output is atomic (see also test_video.test_file_size_limit_mid_run) ---------------

def test_5_video_on_a_full_disk_leaves_nothing(tmp_path, short_clip, tiny_onnx):
    out = tmp_path / "v.mp4"
    rc, _, err = run_hanrt(["upscale", short_clip, "-o", out, "-m", tiny_onnx, *FAST], fsize=3000)
    assert rc == 4 and "File too large" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


# --- 6: a video to an image path; a device as the output --------------------------------------

def test_6_video_to_an_image_path_is_refused(tmp_path, short_clip, tiny_onnx, capsys):
    rc = main(["upscale", str(short_clip), "-o", str(tmp_path / "clip_x4.png"), "-m", str(tiny_onnx), *FAST])
    assert rc == 2 and "names an image file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_6_a_device_as_output_folder(a_png, tiny_onnx, capsys):
    assert main(["upscale", str(a_png), "-o", "/dev/full", "-m", str(tiny_onnx), *FAST]) == 4
    assert "exists and is not a folder" in capsys.readouterr().err


# --- 7: the input is never overwritten; the output-exists check does not race --------------------

def test_7_output_is_the_input(tmp_path, a_png, tiny_onnx, capsys, monkeypatch):
    before = a_png.read_bytes()
    assert main(["upscale", str(a_png), "-o", str(a_png), "--overwrite", "-m", str(tiny_onnx), *FAST]) == 4
    monkeypatch.chdir(tmp_path)
    assert main(["upscale", "a.png", "-o", ".", "--overwrite", "-m", str(tiny_onnx), *FAST]) == 4
    assert capsys.readouterr().err.count("never writes over its input") == 2
    assert a_png.read_bytes() == before


def test_7_no_replace_without_overwrite(tmp_path):
    """A target that appears while the file is written (another process) is kept, not replaced."""
    p = tmp_path / "o.bin"
    with pytest.raises(OutputError, match="appeared while it was being written"):
        with atomic_output(p, overwrite=False) as tmp:
            tmp.write_bytes(b"mine")
            p.write_bytes(b"theirs")
    assert p.read_bytes() == b"theirs" and [f.name for f in tmp_path.iterdir()] == ["o.bin"]


# --- 8: messages ------------------------------------------------------------------------------

def test_8_info_on_a_checkpoint(tmp_path, capsys):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"PK\x03\x04 not really")
    assert main(["info", str(pt)]) == 3
    err = capsys.readouterr().err
    assert "PyTorch checkpoint" in err and "hanrt export" in err and "sidecar" not in err


def test_8_a_text_input_is_blamed_on_the_input(tmp_path, tiny_onnx, capsys):
    t = tmp_path / "notes.txt"
    t.write_text("hello")
    assert main(["upscale", str(t), "-o", str(tmp_path / "o"), "-m", str(tiny_onnx), *FAST]) == 3
    err = capsys.readouterr().err
    assert "notes.txt' is not an image file" in err and "suffix" not in err
    assert not (tmp_path / "o").exists()


def test_8_eval_e1_missing_extra_says_it_once():
    code = IMPORT_BLOCKER + "from hanrt.cli import main; raise SystemExit(main(['eval', 'E1', '--limit', '1']))"
    r = subprocess.run([sys.executable, "-c", code, '["skimage"]'], capture_output=True, text=True,
                       env=hanrt_env(), timeout=120)
    assert r.returncode == 5, r.stderr
    assert r.stderr.count("pip install") == 1, r.stderr


def test_8_quiet_video_prints_nothing_and_progress_is_not_drawn_into_logs(tmp_path, short_clip, tiny_onnx, capsys):
    assert main(["-q", "upscale", str(short_clip), "-o", str(tmp_path / "q.mp4"), "-m", str(tiny_onnx), *FAST]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    rc, out, err = run_hanrt(["upscale", short_clip, "-o", tmp_path / "p.mp4", "-m", tiny_onnx, *FAST])
    assert rc == 0 and "\r" not in err and "frames in 6" in out


def test_8_success_says_what_it_wrote_and_failures_leave_no_empty_folder(tmp_path, a_png, tiny_onnx, capsys):
    out = tmp_path / "o.png"
    assert main(["upscale", str(a_png), "-o", str(out), "-m", str(tiny_onnx), *FAST]) == 0
    assert f"wrote {out} (188x244)" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["upscale", str(bad), "-o", str(tmp_path / "new" / "deeper"), "-m", str(tiny_onnx), *FAST]) == 3
    assert not (tmp_path / "new" / "deeper").exists()


# --- 9: README -------------------------------------------------------------------------------

def test_9_readme_test_command_gets_the_cpu_torch_and_matches_ci():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    cmd = re.search(r"pip install torch==\S+ .*python -m pytest -q", readme).group(0)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in cmd
    assert cmd.split(". .venv/bin/activate && ")[-1] in ci


def test_9_readme_error_table_covers_every_exit_code():
    from hanrt.errors import EXIT_CODES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|", readme, flags=re.M))
    assert set(map(int, table)) == {0, 1} | set(EXIT_CODES.values()) | {130, 143}
