"""`hanrt train`: a real (tiny) training run, resume, fine-tune, and the photo fetcher's checks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hanrt.cli import main
from hanrt.errors import InputError
from hanrt_export.checkpoint import load_checkpoint
from hanrt_export.data import TRAIN_PHOTOS, fetch_training_photos, notice_text
from hanrt_testkit import make_deb


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    # real photos that are not in the held-out E1 set
    skd = pytest.importorskip("skimage.data")
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skd.immunohistochemistry()).save(d / "ihc.png")
    Image.fromarray(skd.retina()[300:800, 300:800]).save(d / "retina.jpg", quality=95)
    return d


def _args(photo_dir, out, *extra):
    return ["train", "--data", str(photo_dir), "--output", str(out), "--resgroups", "1", "--resblocks", "1",
            "--feats", "8", "--reduction", "4", "--batch", "2", "--patch", "8", "--warmup", "2",
            "--val-every", "3", "--save-every", "3", "--threads", "1", *extra]


def test_train_resume_and_finetune(tmp_path, photo_dir, capsys):
    out = tmp_path / "m.pt"
    assert main(_args(photo_dir, out, "--steps", "3")) == 0
    ck = load_checkpoint(out)
    assert ck.meta["step"] == 3 and ck.config.n_feats == 8
    assert np.isfinite(ck.meta["history"][-1]["val_psnr"])
    state = out.with_suffix(".state.pt")
    assert state.exists()
    w3 = ck.model.state_dict()["head.0.weight"].clone()
    # resume continues from step 3 to 6 and changes the weights
    assert main(_args(photo_dir, out, "--steps", "6", "--resume")) == 0
    ck6 = load_checkpoint(out)
    assert ck6.meta["step"] == 6
    assert [h["step"] for h in ck6.meta["history"]] == [3, 6]
    assert not torch.equal(ck6.model.state_dict()["head.0.weight"], w3)
    # fine-tune from a checkpoint keeps its architecture
    ft = tmp_path / "ft.pt"
    assert main(_args(photo_dir, ft, "--steps", "2", "--init", str(out))) == 0
    assert load_checkpoint(ft).config == ck6.config
    text = capsys.readouterr().out
    assert "validation Y-PSNR" in text


def test_train_learns_something(tmp_path, photo_dir):
    """A few dozen steps take a random HAN far closer to the target than at step 0."""
    from hanrt_export.train import TrainConfig, train

    out = tmp_path / "l.pt"
    res = train(TrainConfig(data=str(photo_dir), output=str(out), n_resgroups=1, n_resblocks=1, n_feats=8,
                            reduction=4, steps=40, batch=4, patch=12, warmup=5, lr=2e-3, val_every=20,
                            save_every=40, threads=1))
    first, last = res["history"][0]["val_psnr"], res["history"][-1]["val_psnr"]
    assert last > first + 1.0


def test_grow_blocks_keeps_the_function_and_trains_the_new_blocks():
    from hanrt_export.han import HAN
    from hanrt_export.train import grow_blocks

    torch.manual_seed(3)
    small = HAN(scale=2, n_resgroups=2, n_resblocks=1, n_feats=8, reduction=4).eval()
    with torch.no_grad():  # non-zero attention gammas, so every path carries signal
        for p in small.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    big = grow_blocks(small, 3).eval()
    assert big.config.n_resblocks == 3 and big.config.n_feats == 8
    n_small = sum(p.numel() for p in small.parameters())
    n_big = sum(p.numel() for p in big.parameters())
    assert n_big > n_small
    x = torch.rand(1, 3, 12, 10) * 255
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), atol=1e-4, rtol=0)
    # the new blocks are not dead: one optimizer step moves their zeroed second conv
    zero_key = "body.0.body.2.body.2.weight"
    assert torch.count_nonzero(big.state_dict()[zero_key]) == 0
    big.train()
    opt = torch.optim.Adam(big.parameters(), lr=1e-3)
    torch.nn.functional.l1_loss(big(x), torch.rand(1, 3, 24, 20) * 255).backward()
    opt.step()
    assert torch.count_nonzero(big.state_dict()[zero_key]) > 0
    with pytest.raises(Exception, match="fewer"):
        grow_blocks(big, 2)


def test_train_grow_blocks_from_the_command_line(tmp_path, photo_dir, capsys):
    base = tmp_path / "base.pt"
    assert main(_args(photo_dir, base, "--steps", "2")) == 0
    grown = tmp_path / "grown.pt"
    assert main(_args(photo_dir, grown, "--steps", "2", "--init", str(base), "--grow-blocks", "3")) == 0
    ck = load_checkpoint(grown)
    assert ck.config.n_resblocks == 3
    # the grown checkpoint records where it came from, and the model card tells both stages
    base_ck = load_checkpoint(base)
    (stage1,) = ck.meta["lineage"]
    assert stage1["source_sha256"] == base_ck.sha256 and stage1["step"] == 2
    assert stage1["config"]["n_resblocks"] == 1
    from hanrt_export.bundle import _reproduce, _stages_text

    stages = [*ck.meta["lineage"], {"config": ck.config.to_dict(), "step": ck.meta["step"],
                                    "elapsed_s": ck.meta["elapsed_s"], "train_config": ck.meta["train_config"]}]
    text = _stages_text(stages, 2)
    assert "Stage 1** (1x1x8, from scratch): 2 steps" in text and "Stage 2** (1x3x8, grown" in text
    assert "In all **4 steps" in text
    cmds = _reproduce(stages)
    assert "--resblocks 1" in cmds and "--init stage1.pt --grow-blocks 3" in cmds
    # resuming without repeating --init/--grow-blocks keeps the recipe's record of them
    assert main(_args(photo_dir, grown, "--steps", "3", "--resume")) == 0
    resumed = load_checkpoint(grown)
    assert resumed.meta["step"] == 3 and resumed.meta["train_config"]["grow_blocks"] == 3
    assert resumed.meta["train_config"]["init"] == str(base) and len(resumed.meta["lineage"]) == 1
    assert main(_args(photo_dir, tmp_path / "x.pt", "--steps", "2", "--grow-blocks", "3")) == 2
    assert "--init" in capsys.readouterr().err


def test_texture_biased_sampling_skips_flat_patches(tmp_path):
    from hanrt_export.train import PatchSampler, patch_std

    rng = np.random.default_rng(0)
    img = np.full((64, 256, 3), 128, np.uint8)  # left half flat grey, right half noise
    img[:, 128:] = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "half.png")
    common = dict(scale=2, patch=8, batch=4, shrink=(1.0, 1.0), versions=1, val_fraction=0.0, seed=0)
    plain = PatchSampler([tmp_path / "half.png"], **common)
    biased = PatchSampler([tmp_path / "half.png"], **common, flat_std=20.0, flat_keep=0.0)
    plain.close()
    biased.close()
    plain_stds = [patch_std(plain._one()[1]) for _ in range(200)]
    biased_stds = [patch_std(biased._one()[1]) for _ in range(200)]
    assert min(plain_stds) < 1.0  # unbiased sampling does draw flat grey patches
    assert min(biased_stds) >= 20.0
    assert biased.flat_dropped > 0
    with pytest.raises(Exception, match="flat_keep"):
        PatchSampler([tmp_path / "half.png"], **common, flat_std=5.0, flat_keep=1.5)


def test_validation_split_survives_resume(photo_dir):
    """A resumed run draws new patches but validates on the very same held-out strips."""
    from hanrt_export.train import PatchSampler, find_images

    common = dict(scale=2, patch=8, batch=2, shrink=(0.3, 0.9), versions=2, val_fraction=0.2, seed=5)
    a = PatchSampler(find_images(photo_dir), **common, stream_seed=5)
    b = PatchSampler(find_images(photo_dir), **common, stream_seed=905)
    a.close()
    b.close()
    assert len(a.val_imgs) == len(b.val_imgs) > 0
    assert all(np.array_equal(x, y) for x, y in zip(a.val_imgs, b.val_imgs))
    assert not np.array_equal(a._one()[1], b._one()[1])


def test_train_refuses_bad_data(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--output", str(tmp_path / "x.pt")]) == 3
    assert "no images" in capsys.readouterr().err
    assert main(["train", "--output", str(tmp_path / "x.pt")]) == 2


def test_resume_without_state_is_refused(tmp_path, photo_dir, capsys):
    assert main(_args(photo_dir, tmp_path / "none.pt", "--resume", "--steps", "2")) == 2
    assert "--resume" in capsys.readouterr().err


_CC0 = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2024 T\nLicense: CC0-1.0\n")


def _fake_photo_sources(tmp_path, monkeypatch, sha_a: str | None = None):
    """Two fake photo packages (one file renamed on fetch, as budgie's default.jpg is); returns
    (debs by package name, {written name: source file})."""
    import hashlib

    import hanrt_export.data as data

    d1 = make_deb(tmp_path, "fake-wallpapers", {"usr/share/backgrounds/a.jpg": Image.new("RGB", (4, 4), (40, 0, 0))},
                  copyright=_CC0)
    d2 = make_deb(tmp_path, "fake-desktop", {"usr/share/desk/default.jpg": Image.new("RGB", (4, 4), (0, 80, 0))},
                  copyright=_CC0)
    src = {"a.jpg": tmp_path / "pkg-fake-wallpapers/usr/share/backgrounds/a.jpg",
           "desk_default.jpg": tmp_path / "pkg-fake-desktop/usr/share/desk/default.jpg"}
    monkeypatch.setattr(data, "PACKAGES", {
        "fake-wallpapers": data.Package("fake-wallpapers", "1", "usr/share/backgrounds", 1, "t"),
        "fake-desktop": data.Package("fake-desktop", "1", "usr/share/desk", 1, "t")})
    monkeypatch.setattr(data, "PHOTO_FILES", (
        data.DataFile("photos", "fake-wallpapers", "a.jpg", "T", "CC0-1.0",
                      sha_a or hashlib.sha256(src["a.jpg"].read_bytes()).hexdigest()),
        data.DataFile("photos", "fake-desktop", "default.jpg", "T", "CC0-1.0",
                      hashlib.sha256(src["desk_default.jpg"].read_bytes()).hexdigest(), name="desk_default.jpg")))
    return {"fake-wallpapers": d1, "fake-desktop": d2}, src


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_fetch_refuses_photos_with_wrong_checksum(tmp_path, monkeypatch):
    debs, _ = _fake_photo_sources(tmp_path, monkeypatch, sha_a="0" * 64)
    dest = tmp_path / "dest"
    with pytest.raises(InputError, match="a.jpg: sha256"):
        fetch_training_photos(dest, debs=debs)
    assert not [p for p in dest.iterdir() if p.suffix == ".jpg"]


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_fetch_photos_takes_every_photo_package_and_writes_atomically(tmp_path, monkeypatch, capsys):
    """--fetch-photos: every photo of every package, flat in DIR, renamed where the table says,
    damaged files replaced, no temporary files left; the .debs given on the command line."""
    debs, src = _fake_photo_sources(tmp_path, monkeypatch)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.jpg").write_bytes(b"damaged")  # replaced, since its checksum is wrong
    got = fetch_training_photos(dest, debs=debs)
    assert got == [dest / "a.jpg", dest / "desk_default.jpg"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.jpg", "desk_default.jpg"]
    assert all((dest / n).read_bytes() == p.read_bytes() for n, p in src.items())
    cli_dest = tmp_path / "cli"
    assert main(["train", "--fetch-photos", str(cli_dest), "--deb", str(debs["fake-wallpapers"]),
                 "--deb", str(debs["fake-desktop"])]) == 0
    assert "2 photos ready" in capsys.readouterr().out
    assert sorted(p.name for p in cli_dest.iterdir()) == ["a.jpg", "desk_default.jpg"]


def test_notice_credits_every_photographer():
    from hanrt_export.data import PHOTO_FILES

    text = notice_text()
    assert len(PHOTO_FILES) > len(TRAIN_PHOTOS)
    for f in PHOTO_FILES:
        assert f"{f.path}" in text and f.author in text and f.license in text and f.sha256 in text
    assert "(as budgie_default.jpg)" in text and "CC-BY-3.0: https://creativecommons.org/licenses/by/3.0/" in text


def test_choose_precision_keeps_fp32_unless_another_mode_is_clearly_faster():
    from hanrt_export.train import choose_precision

    # BF16 slower (a CPU without BF16 units): fp32
    assert choose_precision({"fp32": 1.0, "channels_last": 0.97, "bf16": 2.5, "channels_last+bf16": 2.0}) == "fp32"
    # a gain inside the 10 % noise margin is not taken
    assert choose_precision({"fp32": 1.0, "bf16": 0.93}) == "fp32"
    # clearly faster: the fastest wins
    assert choose_precision({"fp32": 1.0, "channels_last": 0.8, "bf16": 0.6, "channels_last+bf16": 0.4}) \
        == "channels_last+bf16"
    assert choose_precision({"fp32": 1.0, "channels_last": 0.85, "bf16": 1.2}) == "channels_last"
    # no fp32 figure, or nonsense figures: fp32
    assert choose_precision({"bf16": 0.1}) == "fp32"
    assert choose_precision({"fp32": float("nan"), "bf16": 0.1}) == "fp32"
    assert choose_precision({"fp32": 1.0, "bf16": 0.0, "channels_last": float("inf")}) == "fp32"
    assert choose_precision({"fp32": 1.0, "bf16": 0.5}, min_gain=0.6) == "fp32"


def test_probe_times_every_mode_and_leaves_the_model_alone():
    from hanrt_export.han import HAN
    from hanrt_export.train import PRECISION_MODES, probe_precision

    torch.manual_seed(0)
    m = HAN(scale=2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    lr = torch.rand(2, 3, 8, 8) * 255
    hr = torch.rand(2, 3, 16, 16) * 255
    t = probe_precision(m, lr, hr, rounds=1)
    assert set(t) == set(PRECISION_MODES)
    assert all(np.isfinite(v) and v > 0 for v in t.values())
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous()


def test_probe_stops_timing_a_mode_that_is_far_slower(monkeypatch):
    """Emulated BF16 (CPUs without it) costs 10x FP32 a step: after one timed round the probe
    stops timing it; the modes that can still win get every round. (Step times are set here:
    real ones cannot be made slow on demand.)"""
    import hanrt_export.train as tr
    from hanrt_export.han import HAN

    fake = {"fp32": 1.0, "channels_last": 0.9, "bf16": 10.0, "channels_last+bf16": 2.5}
    calls: dict[str, int] = {}

    def timed(fwd, opt, lr_b, hr_b, mode, device):
        calls[mode] = calls.get(mode, 0) + 1
        return fake[mode]

    monkeypatch.setattr(tr, "_timed_step", timed)
    m = HAN(scale=2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4)
    t = tr.probe_precision(m, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16), rounds=3)
    assert t == fake  # every mode reported, the dropped one by its single timed step
    assert calls == {"fp32": 4, "channels_last": 4, "bf16": 2, "channels_last+bf16": 4}  # 2.5 < 3 x 0.9
    assert tr.choose_precision(t) == "channels_last"


@pytest.mark.parametrize("mode", ["channels_last+bf16", "fp32"])
def test_forced_precision_trains_and_saves_plain_fp32_weights(tmp_path, photo_dir, mode):
    out = tmp_path / "p.pt"
    assert main(_args(photo_dir, out, "--steps", "3", "--precision", mode)) == 0
    ck = load_checkpoint(out)
    speed = ck.meta["train_config"]["speed"]
    assert speed["mode"] == mode and speed["requested"] == mode and "step_s" not in speed
    for v in ck.model.state_dict().values():
        assert v.dtype == torch.float32 and v.is_contiguous()
    assert np.isfinite(ck.meta["history"][-1]["val_psnr"])


def test_auto_precision_records_the_probe_in_the_recipe(tmp_path, photo_dir):
    from hanrt_export.train import PRECISION_MODES, choose_precision

    out = tmp_path / "a.pt"
    assert main(_args(photo_dir, out, "--steps", "2")) == 0
    speed = load_checkpoint(out).meta["train_config"]["speed"]
    assert speed["requested"] == "auto" and set(speed["step_s"]) == set(PRECISION_MODES)
    assert speed["mode"] == choose_precision(speed["step_s"])
    # a two-step run is far too short to pay for compiling: auto does not try
    assert speed["compile"] == "auto" and speed["compiled"] is False and "too short" in speed["compile_note"]


_needs_cc = pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++") or shutil.which("cc")),
                               reason="torch.compile's CPU backend needs a C++ compiler; none on PATH")
# torch's own modules warn while Dynamo imports them (not hanrt's code)
_torch_internal = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def _trained(photo_dir, out, *extra):
    """Train 3 steps (fp32) with ``extra`` options; the checkpoint and its recipe's speed record."""
    assert main(_args(photo_dir, out, "--steps", "3", "--precision", "fp32", *extra)) == 0
    ck = load_checkpoint(out)
    return ck, ck.meta["train_config"]["speed"]


@_needs_cc
@_torch_internal
def test_compile_auto_probes_a_long_run_and_saves_plain_weights(tmp_path, photo_dir):
    # an 11-minute budget is long enough for auto to compile and time; --steps 3 ends it early
    ck, speed = _trained(photo_dir, tmp_path / "c.pt", "--minutes", "11")
    probe = speed["compile_probe"]
    assert all(np.isfinite(v) and v > 0 for v in probe.values())
    assert speed["compiled"] == (probe["compiled_s"] <= probe["eager_s"] * 0.9)
    assert not any(k.startswith("_orig_mod") for k in ck.model.state_dict())
    assert ck.meta["step"] == 3 and np.isfinite(ck.meta["history"][-1]["val_psnr"])


@_needs_cc
@_torch_internal
def test_compile_on_trains_through_the_compiled_module(tmp_path, photo_dir):
    out = tmp_path / "on.pt"
    ck, speed = _trained(photo_dir, out, "--compile", "on")
    assert speed["compiled"] is True and "compile_probe" not in speed
    init = load_checkpoint(out.with_suffix(".state.pt")).model.state_dict()
    assert set(init) == set(ck.model.state_dict())  # plain keys: the compiled wrapper is not saved


def test_compile_failure_falls_back_to_eager(tmp_path, photo_dir, monkeypatch):
    class Broken(torch.nn.Module):  # what a failing compile does at its first call
        def forward(self, x):
            raise RuntimeError("simulated: Inductor could not build its kernels")

    monkeypatch.setattr(torch, "compile", lambda m, *a, **k: Broken())
    _, speed = _trained(photo_dir, tmp_path / "f.pt", "--compile", "on")
    assert speed["compiled"] is False and "simulated" in speed["compile_note"]


def test_bad_precision_is_refused(tmp_path, photo_dir):
    from hanrt.errors import UsageError
    from hanrt_export.train import TrainConfig, train

    with pytest.raises(UsageError, match="precision"):
        train(TrainConfig(data=str(photo_dir), output=str(tmp_path / "x.pt"), steps=1, precision="fp8"))
    with pytest.raises(UsageError, match="compile"):
        train(TrainConfig(data=str(photo_dir), output=str(tmp_path / "x.pt"), steps=1, compile="max"))


def test_flat_validation_strips_are_left_out():
    """A flat strip (white background of line art) is reproduced exactly by bicubic: its PSNR is
    infinite and used to turn the mean into inf ('bicubic inf' in the progress bar)."""
    from hanrt_export.han import HAN
    from hanrt_export.train import _bicubic_val, _val_strips, validate

    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 255, np.uint8)
    textured = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(_val_strips([flat, textured], 4, 256)) == 1
    assert np.isfinite(_bicubic_val([flat, textured], 4))
    model = HAN(scale=4, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4)
    assert np.isfinite(validate(model, [flat, textured], 4, "cpu"))


def test_document_reproduce_names_the_page_stages():
    """A document model's lineage: photo stages, then every stage from the first whose data folder
    changed is a page stage (the card's reproduce commands once told a page stage to train on photos)."""
    from hanrt_export.bundle import _reproduce

    def stage(data, step, init=None):
        return {"config": {"n_resgroups": 2, "n_resblocks": 8, "n_feats": 32, "reduction": 8}, "step": step,
                "train_config": {"data": data, "init": init, "seed": 0}}

    stages = [stage("/tmp/photos", 10), stage("/tmp/photos", 20, "a.pt"), stage("/x/pages/images", 30, "b.pt"),
              stage("docdata", 40, "c.pt")]
    cmds = _reproduce(stages, "document").split(",\n")
    assert [c.split("--data ")[1].split()[0] for c in cmds] == ["photos", "photos", "pages/images", "pages/images"]
    assert [c.split("--data ")[1].split()[0] for c in _reproduce(stages[:2]).split(",\n")] == ["photos", "photos"]


def test_stage_text_says_when_a_stage_stopped_before_its_schedule_ended():
    from hanrt_export.bundle import _stages_text

    cfg = {"scale": 4, "n_resgroups": 2, "n_resblocks": 16, "n_feats": 32, "reduction": 8}
    tc = {"lr": 2e-4, "lr_min": 1e-6, "warmup": 100, "batch": 16, "patch": 40, "time_budget_s": 118 * 60,
          "init": "doc4.pt", "grow_blocks": 16}
    early = _stages_text([{"config": cfg, "step": 4000, "elapsed_s": 45 * 60, "train_config": tc}], 4)
    # cosine at 45/118 of the budget: 1e-6 + 0.5 * (2e-4 - 1e-6) * (1 + cos(pi * 0.381)) = 1.4e-4
    assert "stopped early (45 of its 118 min; learning rate then 0.00014)" in early
    full = _stages_text([{"config": cfg, "step": 9000, "elapsed_s": 118 * 60, "train_config": tc}], 4)
    assert "stopped early" not in full


def _pair_dir(tmp_path, photo_dir):
    """Targets that differ from their sources in a way bicubic cannot undo: the negative."""
    tg = tmp_path / "targets"
    tg.mkdir()
    for f in sorted(photo_dir.iterdir()):
        Image.fromarray(255 - np.asarray(Image.open(f).convert("RGB"))).save(tg / f.name)
    return tg


def test_targets_pair_every_patch_with_the_same_place_of_its_target(tmp_path, photo_dir):
    from hanrt_export.train import PatchSampler, find_images, find_targets

    files = find_images(photo_dir)
    targets = find_targets(files, _pair_dir(tmp_path, photo_dir))
    common = dict(scale=2, patch=16, batch=2, shrink=(0.5, 0.9), versions=2, val_fraction=0.2, seed=3)
    s = PatchSampler(files, **common, targets=targets)
    s.close()
    assert all(a.shape[2] == 6 for a in s.train_imgs + s.val_imgs)
    for _ in range(20):
        lr, hr = s._one()
        assert lr.shape == (16, 16, 3) and hr.shape == (32, 32, 3)
        # LR is made from the source; the HR patch is the target (the negative) of the same place,
        # flipped and rotated alike: so the negative of HR, shrunk, is LR (up to the rounding of
        # the two shrinks, which bicubic's overshoot can stretch to a few levels)
        def err(h):
            back = np.asarray(Image.fromarray(np.ascontiguousarray(255 - h)).resize((16, 16), Image.BICUBIC))
            return np.abs(back.astype(int) - lr.astype(int)).mean()

        assert err(hr) < 2.0
        assert err(hr) < 0.5 * min(err(hr[::-1]), err(hr[:, ::-1]))  # not flipped apart
    # the same seed without targets draws the same shrunk sources
    plain = PatchSampler(files, **common)
    plain.close()
    assert all(np.array_equal(a[..., :3], b) for a, b in zip(s.train_imgs, plain.train_imgs))


def test_train_with_targets_validates_against_the_targets(tmp_path, photo_dir, capsys):
    tg = _pair_dir(tmp_path, photo_dir)
    out = tmp_path / "t.pt"
    assert main(_args(photo_dir, out, "--steps", "3", "--targets", str(tg))) == 0
    ck = load_checkpoint(out)
    assert ck.meta["train_config"]["targets"] == str(tg)
    # bicubic of the source is far from the negative target: validation measured against targets
    assert ck.meta["history"][-1]["bicubic_psnr"] < 20
    plain = tmp_path / "p.pt"
    assert main(_args(photo_dir, plain, "--steps", "3")) == 0
    assert load_checkpoint(plain).meta["history"][-1]["bicubic_psnr"] > 25


def test_targets_must_exist_and_match_in_size(tmp_path, photo_dir, capsys):
    tg = _pair_dir(tmp_path, photo_dir)
    first = sorted(tg.iterdir())[0]
    Image.open(first).resize((40, 30)).save(first)
    assert main(_args(photo_dir, tmp_path / "x.pt", "--steps", "1", "--targets", str(tg))) == 3
    assert "must match its image's size" in capsys.readouterr().err
    first.unlink()
    assert main(_args(photo_dir, tmp_path / "x.pt", "--steps", "1", "--targets", str(tg))) == 3
    assert "no target of the same name" in capsys.readouterr().err
    assert main(_args(photo_dir, tmp_path / "x.pt", "--steps", "1", "--targets", str(tmp_path / "nope"))) == 3
    assert "is not a folder" in capsys.readouterr().err


def test_card_says_when_a_stage_trained_on_targets():
    from hanrt_export.bundle import _reproduce, _stages_text

    cfg = {"scale": 4, "n_resgroups": 2, "n_resblocks": 16, "n_feats": 32, "reduction": 8}
    tc = {"lr": 2e-4, "warmup": 100, "batch": 16, "patch": 40, "data": "/w/pages/images", "init": "d.pt",
          "targets": "/w/pages/clean"}
    st = [{"config": cfg, "step": 10, "train_config": {**tc, "data": "/w/photos", "init": None, "targets": None}},
          {"config": cfg, "step": 20, "elapsed_s": 60, "train_config": tc}]
    text = _stages_text(st, 4)
    assert text.count("trained to restore") == 1 and "clean scan" in text
    cmds = _reproduce(st, "document").split(",\n")
    assert "--targets" not in cmds[0] and "--data pages/images" in cmds[1] and "--targets pages/clean" in cmds[1]


def test_pixel_losses_measure_what_they_name():
    from hanrt.errors import UsageError
    from hanrt_export.train import CHARBONNIER_EPS, LOSSES, pixel_loss

    hr = torch.zeros(1, 3, 4, 4)
    out = hr.clone()
    out[0, 0, 0, 0] = 8.0  # one pixel off by 8 out of 48 values
    assert float(pixel_loss(out, hr, "l1")) == pytest.approx(8 / 48)
    assert float(pixel_loss(out, hr, "mse")) == pytest.approx(64 / 48)
    # Charbonnier: sqrt(d^2 + eps^2), so ~|d| where d is large and eps where the pixels agree
    ch = float(pixel_loss(out, hr, "charbonnier"))
    assert ch == pytest.approx((np.hypot(8, CHARBONNIER_EPS) + 47 * CHARBONNIER_EPS) / 48, rel=1e-5)
    assert set(LOSSES) == {"l1", "mse", "charbonnier"}
    with pytest.raises(UsageError, match="--loss"):
        pixel_loss(out, hr, "l2")


def test_luma_weight_moves_the_loss_onto_the_y_the_papers_measure():
    from hanrt.errors import UsageError
    from hanrt_bench.quality import rgb_to_y
    from hanrt_export.train import pixel_loss, to_luma

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 6, 6, generator=g) * 255
    out = hr + torch.randn(2, 3, 6, 6, generator=g) * 5
    # to_luma is the quality module's Y without its +16 offset
    y_ref = rgb_to_y(hr[0].permute(1, 2, 0).numpy().astype(np.float64)) - 16.0
    assert np.allclose(to_luma(hr)[0, 0].numpy(), y_ref, atol=1e-3)
    rgb, y = float(pixel_loss(out, hr, "l1")), float(F.l1_loss(to_luma(out), to_luma(hr)))
    assert float(pixel_loss(out, hr, "l1", 0.0)) == pytest.approx(rgb)
    assert float(pixel_loss(out, hr, "l1", 1.0)) == pytest.approx(y, rel=1e-5)
    assert float(pixel_loss(out, hr, "l1", 0.25)) == pytest.approx(0.75 * rgb + 0.25 * y, rel=1e-5)
    assert float(pixel_loss(out, hr, "mse", 1.0)) == pytest.approx(
        float(F.mse_loss(to_luma(out), to_luma(hr))), rel=1e-5)
    # an error the eye sees as colour only (equal and opposite in Y's terms) costs nothing on luma
    chroma = hr.clone()
    chroma[:, 0] += 128.553 / 65.481
    chroma[:, 1] -= 1.0
    assert float(pixel_loss(chroma, hr, "l1", 1.0)) == pytest.approx(0.0, abs=1e-3)
    assert float(pixel_loss(chroma, hr, "l1", 0.5)) > 0.3
    for bad in (-0.1, 1.5):
        with pytest.raises(UsageError, match="--luma-weight"):
            pixel_loss(out, hr, "l1", bad)


def test_train_with_a_luma_weight_records_it_for_the_card(tmp_path, photo_dir, capsys):
    from hanrt_export.bundle import _loss_text, _reproduce, _stages_text

    out = tmp_path / "y.pt"
    assert main(_args(photo_dir, out, "--steps", "2", "--luma-weight", "0.75")) == 0
    ck = load_checkpoint(out)
    tc = ck.meta["train_config"]
    assert tc["luma_weight"] == 0.75 and np.isfinite(ck.meta["history"][-1]["val_psnr"])
    st = [{"config": ck.config.to_dict(), "step": 2, "elapsed_s": 1.0, "train_config": tc}]
    assert "0.75 of the loss on luma (BT.601 Y)" in _stages_text(st, 4)
    assert "--luma-weight 0.75" in _reproduce(st)
    assert "share on luma" in _loss_text(st)
    assert main(_args(photo_dir, tmp_path / "z.pt", "--steps", "1", "--luma-weight", "2")) != 0
    assert "--luma-weight" in capsys.readouterr().err


def test_ema_follows_the_weights_with_a_ramped_decay():
    from hanrt.errors import UsageError
    from hanrt_export.train import make_ema

    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = make_ema(m, 0.9)
    ema.update_parameters(m)  # the first update copies the weights
    expect = 0.0
    for n in range(1, 30):
        with torch.no_grad():
            m.weight.fill_(float(n))
        ema.update_parameters(m)
        d = min(0.9, (1 + n) / (10 + n))
        expect = expect + (n - expect) * (1 - d)
        assert float(ema.module.weight.detach()) == pytest.approx(expect, rel=1e-5)
    # an average lags the weights it follows
    assert float(ema.module.weight.detach()) < float(m.weight.detach()) - 1
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(UsageError, match="--ema"):
            make_ema(m, bad)


def test_train_with_mse_and_ema_saves_the_average_and_resumes_it(tmp_path, photo_dir, capsys):
    out = tmp_path / "e.pt"
    assert main(_args(photo_dir, out, "--steps", "3", "--loss", "mse", "--ema", "0.9", "--lr", "0.01")) == 0
    ck = load_checkpoint(out)
    tc = ck.meta["train_config"]
    assert tc["loss"] == "mse" and tc["ema"] == 0.9
    h = ck.meta["history"][-1]
    assert np.isfinite(h["val_psnr"]) and np.isfinite(h["val_psnr_raw"])
    state = torch.load(out.with_suffix(".state.pt"), weights_only=True)
    avg = {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    assert int(state["ema"]["n_averaged"]) == 3
    # the output is the average, not the last step's weights (the state keeps those)
    saved = ck.model.state_dict()
    assert all(torch.allclose(saved[k], avg[k]) for k in saved if k in avg)
    assert not torch.equal(saved["head.0.weight"], state["state_dict"]["head.0.weight"])
    # resume carries the average on
    assert main(_args(photo_dir, out, "--steps", "5", "--loss", "mse", "--ema", "0.9", "--lr", "0.01",
                      "--resume")) == 0
    state5 = torch.load(out.with_suffix(".state.pt"), weights_only=True)
    assert int(state5["ema"]["n_averaged"]) == 5
    # the card names the loss and the average, and the reproduce line repeats the options
    from hanrt_export.bundle import _loss_text, _reproduce, _stages_text

    st = [{"config": ck.config.to_dict(), "step": 5, "elapsed_s": 1.0, "train_config": tc,
           "final_val": h}]
    text = _stages_text(st, 4)
    assert "MSE loss" in text and "moving average of the weights (decay 0.9)" in text
    assert "the last step's own weights" in text
    assert "--loss mse --ema 0.9" in _reproduce(st)
    assert "unless a stage below names another loss" in _loss_text(st)
    assert _loss_text([{**st[0], "train_config": {**tc, "loss": "l1"}}]) == "L1 loss on 0..255"


def test_bad_loss_and_ema_are_refused(tmp_path, photo_dir, capsys):
    assert main(_args(photo_dir, tmp_path / "x.pt", "--steps", "1", "--ema", "1.5")) != 0
    assert "--ema" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(photo_dir, tmp_path / "x.pt", "--steps", "1", "--loss", "l2"))


def test_a_stage_records_its_files_and_the_bundle_credits_only_recorded_ones(tmp_path, photo_dir):
    from hanrt_export.bundle import recorded_files
    from hanrt_export.data import PHOTO_FILES

    out = tmp_path / "r.pt"
    assert main(_args(photo_dir, out, "--steps", "1")) == 0
    ck = load_checkpoint(out)
    assert sorted(ck.meta["train_config"]["data_files"]) == ["ihc.png", "retina.jpg"]
    ft = tmp_path / "ft.pt"
    assert main(_args(photo_dir, ft, "--steps", "1", "--init", str(out))) == 0
    meta = load_checkpoint(ft).meta
    assert sorted(recorded_files([*meta["lineage"], meta])) == ["ihc.png", "retina.jpg"]
    # stages trained on different files: the union; an external checkpoint (no step) credits nothing;
    # a trained stage without a record (older hanrt) makes the record unusable
    a, b = PHOTO_FILES[0], PHOTO_FILES[-1]
    st = [{"origin": "external"}, {"step": 5, "train_config": {"data_files": [f"x/{a.out_name}"]}},
          {"step": 9, "train_config": {"data_files": [b.out_name, "page_1000.png"]}}]
    assert recorded_files(st) == [a.out_name, b.out_name, "page_1000.png"]
    assert recorded_files([*st, {"step": 3, "train_config": {}}]) is None
    notice = notice_text(kinds=("photos",), used=recorded_files(st))
    assert a.sha256 in notice and b.sha256 in notice
    assert PHOTO_FILES[1].sha256 not in notice


def _nearest(scale):
    """A teacher whose output is known exactly: every LR pixel becomes a scale x scale block."""
    return lambda lr: np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)


def test_distill_images_make_the_teacher_s_output_the_target():
    from hanrt.errors import UsageError
    from hanrt_export.train import distill_images

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (43, 38, 3), dtype=np.uint8)  # not multiples of 4: trimmed to 40x36
    lr = np.asarray(Image.fromarray(a[:40, :36]).resize((9, 10), Image.BICUBIC))
    teach = _nearest(4)(lr).astype(np.float32)
    (d,) = distill_images([a], _nearest(4), 4)
    assert d.shape == (40, 36, 6) and d.dtype == np.uint8
    assert np.array_equal(d[..., :3], a[:40, :36])  # the source is kept for the patches' own LR
    assert np.array_equal(d[..., 3:], teach.astype(np.uint8))
    (h,) = distill_images([a], _nearest(4), 4, weight=0.25)
    assert np.array_equal(h[..., 3:], np.rint(0.25 * teach + 0.75 * a[:40, :36]).astype(np.uint8))
    # a (source, target) pair: the teacher sees the source, the mix takes the pair's target
    pair = np.concatenate([a, 255 - a], axis=2)
    (p,) = distill_images([pair], _nearest(4), 4, weight=0.5)
    assert np.array_equal(p[..., :3], a[:40, :36])
    assert np.array_equal(p[..., 3:], np.rint(0.5 * teach + 0.5 * (255 - a[:40, :36])).astype(np.uint8))
    with pytest.raises(UsageError, match="scale"):
        distill_images([a], _nearest(2), 4)
    with pytest.raises(UsageError, match="--teacher-weight"):
        distill_images([a], _nearest(4), 4, weight=1.5)


def test_sampler_draws_patches_of_the_teacher_s_targets_and_validates_on_the_truth(photo_dir):
    from hanrt_export.train import PatchSampler, find_images

    files = find_images(photo_dir)
    common = dict(scale=2, patch=16, batch=2, shrink=(0.5, 0.9), versions=2, val_fraction=0.2, seed=3)
    plain = PatchSampler(files, **common)
    plain.close()
    s = PatchSampler(files, **common, teacher=_nearest(2))
    s.close()
    assert s.teacher_s >= 0 and len(s.train_imgs) == len(plain.train_imgs)
    for a, b in zip(s.train_imgs, plain.train_imgs):
        h, w = b.shape[0] // 2 * 2, b.shape[1] // 2 * 2
        assert a.shape == (h, w, 6) and np.array_equal(a[..., :3], b[:h, :w])
        # nearest-neighbour targets: every 2x2 block is one colour
        assert np.array_equal(a[0::2, 0::2, 3:], a[1::2, 1::2, 3:])
    assert all(np.array_equal(a, b) for a, b in zip(s.val_imgs, plain.val_imgs))
    # patches are cut on the teacher's grid (and flipped or turned whole): its 2x2 blocks stay whole
    for _ in range(20):
        lr, hr = s._one()
        assert np.array_equal(hr[0::2, 0::2], hr[1::2, 1::2]) and np.array_equal(hr[0::2, 0::2], hr[1::2, 0::2])


def test_train_distils_a_teacher_s_ensemble_and_the_card_says_so(tmp_path, photo_dir, capsys, caplog):
    from hanrt.io.digest import sha256_file
    from hanrt_export.bundle import _reproduce, _stages_text
    from hanrt_export.train import init_lineage

    teacher = tmp_path / "teacher.pt"
    assert main(_args(photo_dir, teacher, "--steps", "2", "--scale", "2")) == 0
    out = tmp_path / "student.pt"
    assert main(_args(photo_dir, out, "--steps", "2", "--scale", "2", "--init", str(teacher), "--teacher",
                      str(teacher), "--teacher-ensemble", "4", "--teacher-weight", "0.75")) == 0
    ck = load_checkpoint(out)
    tc = ck.meta["train_config"]
    assert (tc["teacher"], tc["teacher_ensemble"], tc["teacher_weight"]) == (str(teacher), 4, 0.75)
    assert tc["teacher_sha256"] == sha256_file(teacher) and tc["teacher_s"] >= 0
    # validation is against the true images, as without a teacher
    assert ck.meta["history"][-1]["bicubic_psnr"] == load_checkpoint(teacher).meta["history"][-1]["bicubic_psnr"]
    stages = [*init_lineage(load_checkpoint(teacher)), {"config": ck.config.to_dict(), "step": 2, "train_config": tc}]
    text = _stages_text(stages, 2)
    assert "distilled (teacher stage 1's result; the target is 0.75 x its 4-pass self-ensemble + 0.25 x the true" in text
    assert "made once (in 0 min) from each whole training image" in text
    assert "--init stage1.pt" in _reproduce(stages).split(",\n")[1]
    assert "--teacher stage1.pt --teacher-ensemble 4 --teacher-weight 0.75" in _reproduce(stages).split(",\n")[1]
    # another model as the teacher is named with its digest
    other = {**tc, "teacher_sha256": "ab" * 32}
    assert "teacher `" + str(teacher) + "` (sha256 abababab" in _stages_text([stages[0], {**stages[1], "train_config": other}], 2)
    # resuming without the teacher trains on the true images, and says so
    with caplog.at_level("WARNING", logger="hanrt_export.train"):
        assert main(_args(photo_dir, out, "--steps", "3", "--scale", "2", "--resume")) == 0
    assert "began with --teacher" in caplog.text
    # refusals: a teacher of another scale, a share outside 0..1
    assert main(_args(photo_dir, tmp_path / "x.pt", "--steps", "1", "--teacher", str(teacher))) == 2
    assert "upscales x2 but the model trains x4" in capsys.readouterr().err
    assert main(_args(photo_dir, tmp_path / "x.pt", "--steps", "1", "--scale", "2", "--teacher", str(teacher),
                      "--teacher-weight", "-0.5")) == 2
    assert "--teacher-weight" in capsys.readouterr().err
