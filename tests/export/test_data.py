"""Training data fetcher (``hanrt train --fetch-data``): licence filter, sha256 checks, generated
screenshots, and the layout that ``hanrt train --data`` reads. Packages are real .deb files built
here with dpkg-deb; nothing touches the network."""

from __future__ import annotations

import hashlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import hanrt_export.data as data
from hanrt.cli import main
from hanrt.errors import InputError
from hanrt_testkit import make_deb

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake

Files: *
Copyright: 2020 Someone
License: CC-BY-SA-4.0

Files: 16.04/free.jpg
Copyright: 2018 A
License: CC0-1.0

Files: 16.04/gpl.jpg
Copyright: 2018 B
License: GPL-2+

Files: debian/*
Copyright: 2020 C
License: Expat
"""
PD = ("This package was debianized by someone.\n\nCopyright:\n\n creative commons Public Domain Dedication\n"
      " ... dedicates whatever copyright ...\n")


def _photo(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8))


def _clip_image() -> Image.Image:
    a = np.zeros((20, 30, 4), np.uint8)
    a[5:15, 5:25] = (200, 10, 10, 255)  # opaque red box on a transparent page
    return Image.fromarray(a, "RGBA")


@pytest.fixture
def fake_sources(tmp_path, monkeypatch):
    """Two fake packages (a DEP-5 photo package, a public-domain clip-art package), the tables
    pointing at them, and 2 screenshots; returns {package: deb}."""
    photos = {n: _photo(i) for i, n in enumerate(("free.jpg", "share.jpg", "gpl.jpg"))}
    pdeb = make_deb(tmp_path, "fake-wallpapers", {f"usr/share/backgrounds/{n}": im for n, im in photos.items()},
                    copyright=DEP5)
    bg = tmp_path / "pkg-fake-wallpapers/usr/share/backgrounds"
    cdeb = make_deb(tmp_path, "fake-clipart", {"usr/share/clip/png/animals/box.png": _clip_image()}, copyright=PD)
    clip_src = tmp_path / "pkg-fake-clipart/usr/share/clip/png/animals/box.png"

    def sha(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    monkeypatch.setattr(data, "PACKAGES", {
        "fake-wallpapers": data.Package("fake-wallpapers", "1", "usr/share/backgrounds", 1, "t"),
        "fake-clipart": data.Package("fake-clipart", "1", "usr/share/clip/png", 1, "t", license="public-domain",
                                     license_phrase="Public Domain Dedication"),
    })
    monkeypatch.setattr(data, "PHOTO_FILES", (
        data.DataFile("photos", "fake-wallpapers", "free.jpg", "A", "CC0-1.0", sha(bg / "free.jpg"), year=2018),))
    monkeypatch.setattr(data, "LINE_ART", (
        data.DataFile("lineart", "fake-clipart", "animals/box.png", "C", "public-domain", sha(clip_src),
                      data.pixel_sha256(data._flatten(clip_src))),))
    pytest.importorskip("hanrt_bench.docpages")
    from hanrt_export.screens import make_screen

    try:
        monkeypatch.setattr(data, "SCREENS", tuple((s, data.pixel_sha256(make_screen(s))) for s in (7, 8)))
    except FileNotFoundError as e:  # the page fonts are not installed here
        pytest.skip(str(e))
    return {"fake-wallpapers": pdeb, "fake-clipart": cdeb, "bg": bg}


@needs_dpkg
def test_fetch_data_writes_every_kind_and_the_training_loader_reads_them(tmp_path, fake_sources):
    from hanrt_export.train import find_images

    dest = tmp_path / "data"
    got = data.fetch_training_data(dest, debs={k: v for k, v in fake_sources.items() if k != "bg"})
    assert {k: [p.relative_to(dest).as_posix() for p in v] for k, v in got.items()} == {
        "photos": ["photos/free.jpg"], "lineart": ["lineart/box.png"],
        "screens": ["screens/screen_0007.png", "screens/screen_0008.png"]}
    assert (dest / "photos/free.jpg").read_bytes() == (fake_sources["bg"] / "free.jpg").read_bytes()
    clip = np.asarray(Image.open(dest / "lineart/box.png"))
    assert clip.shape == (20, 30, 3)  # transparency flattened onto white
    assert (clip[0, 0] == 255).all() and tuple(clip[10, 10]) == (200, 10, 10)
    assert sorted(find_images(dest)) == sorted(p for v in got.values() for p in v)  # recursive loader
    notice = (dest / "NOTICE").read_text()
    for f in (*data.PHOTO_FILES, *data.LINE_ART):
        assert f.sha256 in notice and f.license in notice and f.author in notice
    assert "screen" in notice.lower() and "fonts-dejavu-core" in notice
    # a second run keeps intact files (nothing fetched: no .deb needed) and repairs a damaged one
    (dest / "lineart/box.png").write_bytes(b"damaged")
    with pytest.raises(InputError):  # the damaged file needs its package again; no .deb, no apt here
        data.fetch_training_data(dest, kinds=["lineart"], debs={"fake-clipart": tmp_path / "missing.deb"})
    data.fetch_training_data(dest, kinds=["lineart"], debs={"fake-clipart": fake_sources["fake-clipart"]})
    assert np.array_equal(np.asarray(Image.open(dest / "lineart/box.png")), clip)


@needs_dpkg
@pytest.mark.parametrize("name, lic", [("share.jpg", "CC-BY-SA-4.0"), ("gpl.jpg", "GPL-2+")])
def test_copyleft_files_are_refused_by_their_package_copyright(tmp_path, fake_sources, monkeypatch, name, lic):
    # the table (wrongly) claims CC0 and the sha256 matches: the package's copyright file decides
    sha = hashlib.sha256((fake_sources["bg"] / name).read_bytes()).hexdigest()
    monkeypatch.setattr(data, "PHOTO_FILES", (data.DataFile("photos", "fake-wallpapers", name, "X", "CC0-1.0", sha),))
    dest = tmp_path / "data"
    with pytest.raises(InputError, match=re.escape(f"licensed '{lic}'; only CC0-1.0")):
        data.fetch_training_data(dest, kinds=["photos"], debs={"fake-wallpapers": fake_sources["fake-wallpapers"]})
    assert not (dest / "photos" / name).exists()


def test_licence_filter_names_the_allowed_licences():
    for ok in ("CC0-1.0", "CC-BY-4.0", "public-domain"):
        data.check_license(ok, "x")
    for bad in ("CC-BY-SA-3.0", "GPL-2+", "LGPL-3", "unknown"):
        with pytest.raises(InputError, match="refused"):
            data.check_license(bad, "x.jpg")


@needs_dpkg
def test_unreadable_copyright_without_a_known_dedication_is_refused(tmp_path, fake_sources, monkeypatch):
    (tmp_path / "other").mkdir()
    deb = make_deb(tmp_path / "other", "fake-clipart", {"usr/share/clip/png/animals/box.png": _clip_image()},
                   copyright="All rights reserved.\n")
    with pytest.raises(InputError, match="no licence"):
        data.fetch_training_data(tmp_path / "data", kinds=["lineart"], debs={"fake-clipart": deb})


@needs_dpkg
def test_sha256_mismatch_is_refused_with_the_file_named(tmp_path, fake_sources, monkeypatch, capsys):
    monkeypatch.setattr(data, "PHOTO_FILES", (
        data.DataFile("photos", "fake-wallpapers", "free.jpg", "A", "CC0-1.0", "0" * 64),))
    dest = tmp_path / "data"
    rc = main(["train", "--fetch-data", str(dest), "--kinds", "photos", "--deb", str(fake_sources["fake-wallpapers"])])
    err = capsys.readouterr().err
    assert rc != 0 and "free.jpg: sha256" in err and "refusing it" in err
    assert not (dest / "photos/free.jpg").exists()


@needs_dpkg
def test_a_deb_of_an_unknown_package_is_refused(tmp_path, fake_sources):
    deb = make_deb(tmp_path, "something-else", {"usr/share/x.txt": b"x"})
    with pytest.raises(InputError, match="something-else"):
        data.fetch_training_data(tmp_path / "d", debs={data.deb_package_name(deb): deb})


def test_screens_are_deterministic_and_match_the_recorded_digests():
    pytest.importorskip("hanrt_bench.docpages")
    from hanrt_export.screens import make_screen

    try:
        a = make_screen(data.SCREENS[0][0])
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert data.pixel_sha256(a) == data.pixel_sha256(make_screen(data.SCREENS[0][0]))
    assert data.pixel_sha256(a) != data.pixel_sha256(make_screen(data.SCREENS[1][0]))
    # not a blank page: many colours, lots of edges (text)
    arr = np.asarray(a, np.int16)
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 200 and np.abs(np.diff(arr, axis=1)).mean() > 3


def test_recorded_screen_digests_match_this_renderer():
    """The digests in data.py are what the recorded Pillow/FreeType render (fails if the fonts or
    the generator changed under the same renderer)."""
    import PIL
    from PIL import features

    pytest.importorskip("hanrt_bench.docpages")
    from hanrt_export.screens import make_screen, screen_fonts

    here = {"pillow": PIL.__version__, "freetype2": features.version("freetype2")}
    if here != data.SCREENS_RENDERER:
        pytest.skip(f"digests recorded with {data.SCREENS_RENDERER}, this is {here}")
    try:
        screen_fonts()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert [data.pixel_sha256(make_screen(s)) for s, _ in data.SCREENS[:3]] == [d for _, d in data.SCREENS[:3]]


@needs_dpkg
def test_changed_screen_rendering_is_refused_unless_accepted(tmp_path, fake_sources, monkeypatch):
    monkeypatch.setattr(data, "SCREENS", ((7, "f" * 64),))
    with pytest.raises(InputError, match="accept-new-screens"):
        data.fetch_training_data(tmp_path / "d", kinds=["screens"])
    assert not (tmp_path / "d/screens/screen_0007.png").exists()
    got = data.fetch_training_data(tmp_path / "d", kinds=["screens"], accept_new_screens=True)
    assert got["screens"][0].is_file()


def test_tables_are_consistent():
    names = [f.file for f in (*data.PHOTO_FILES, *data.LINE_ART)]
    assert len(names) == len(set(names))
    for f in (*data.PHOTO_FILES, *data.LINE_ART):
        data.check_license(f.license, f.file)
        assert f.package in data.PACKAGES and len(f.sha256) == 64
        assert f.kind == "photos" or len(f.pixels) == 64
    held_out = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon.", "brick", "grass",
                "gravel", "hubble", "grace_hopper")
    assert not [n for n in names if any(h in n.lower() for h in held_out)]
    assert 40 <= len(data.LINE_ART) <= 80 and len(data.SCREENS) >= 20


def test_notice_lists_only_the_files_trained_on():
    """A model trained on a subset (some files held out for evaluation) credits exactly that subset."""
    photo, art = data.PHOTO_FILES[0], data.LINE_ART[0]
    used = [photo.file, art.file, "screen_0100.png"]
    text = data.notice_text(used=used)
    assert photo.sha256 in text and art.sha256 in text
    assert data.PHOTO_FILES[1].sha256 not in text and data.LINE_ART[1].sha256 not in text
    assert "Screenshot-like images: 1 made by hanrt_export.screens (seeds 100)" in text
    full = data.notice_text()
    assert all(f.sha256 in full for f in (*data.PHOTO_FILES, *data.LINE_ART))
    assert "Screenshot-like images: 0" not in data.notice_text(used=[photo.file])


def test_bundle_card_counts_the_folder_trained_on(tmp_path):
    """The model card's data text comes from the folder trained on: files and megapixels per kind,
    and how many of the fetched set were held out."""
    from hanrt_export.bundle import _data_counts, _training_files

    for kind, n, size in (("photos", 2, (200, 100)), ("lineart", 3, (100, 100)), ("screens", 1, (300, 200))):
        (tmp_path / kind).mkdir()
        for i in range(n):
            Image.new("RGB", size).save(tmp_path / kind / f"{kind}{i}.png")
    used = _training_files(tmp_path)
    assert {k: len(v) for k, v in used.items()} == {"photos": 2, "lineart": 3, "screens": 1}
    c = _data_counts(used)
    assert c["photos"] == "2 (0.0 MP)" and c["screens"] == "1 (0.1 MP)"
    assert f"{len(data.LINE_ART) - 3} of the {len(data.LINE_ART)} lineart" in c["note"]
    assert _data_counts(None)["note"] == "" and _data_counts(None)["lineart"] == str(len(data.LINE_ART))


def test_bundle_card_names_only_the_kinds_trained_on(tmp_path):
    """A photo model trained on the photos alone: the card lists photos only, and the drawings and
    screenshots it never used are not called 'held out'."""
    from hanrt_export.bundle import _data_counts, _kinds_text, _training_files

    for i in range(3):
        Image.new("RGB", (120, 80)).save(tmp_path / f"p{i}.jpg")
    used = _training_files(tmp_path)
    counts = _data_counts(used)
    assert counts["note"] == f" ({len(data.PHOTO_FILES) - 3} of the {len(data.PHOTO_FILES)} photos held out for " \
                             "evaluation, not trained on)"
    text, n = _kinds_text(used, counts)
    assert n == 1 and text.startswith("3 (0.0 MP) photos from Debian packages `lomiri-wallpapers-16.04`") \
        and "openclipart" not in text and "public-domain)" in text  # names unknown to the table: every source
    for f in data.PHOTO_FILES[:2]:  # trained on two lomiri photos: that package and their licences alone
        Image.new("RGB", (120, 80)).save(tmp_path / f.out_name)
    text, _ = _kinds_text({"photos": [tmp_path / f.out_name for f in data.PHOTO_FILES[:2]], "lineart": [], "screens": []},
                          counts)
    assert "photos from Debian's `lomiri-wallpapers-16.04` 20.04.0-2 (CC-BY-4.0 only)" in text
    text, n = _kinds_text(None, _data_counts(None))
    assert n == 3 and "openclipart-png" in text and " and " in text and "hanrt_export.screens" in text


def test_licence_of_renamed_and_glob_matched_package_files():
    """The shapes of the newer photo packages' copyright files: a source-tree path for one file
    among a CC-BY-SA folder (sddm-theme-maldives' background.jpg), and base-name globs where a
    broader pattern comes first (endless-sky's images/land/*); the last matching paragraph wins."""
    sddm = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: x\nLicense: GPL-2+\n\n"
            "Files: data/themes/maldives/*\nCopyright: x\nLicense: CC-BY-SA-3.0\n\n"
            "Files: data/themes/maldives/background.jpg\nCopyright: 2008 y\nLicense: CC-BY-3.0\n")
    pkg = data.PACKAGES["sddm-theme-maldives"]
    assert data.package_license(sddm, pkg, "background.jpg") == "CC-BY-3.0"
    assert data.package_license(sddm, pkg, "maldives.jpg") == "GPL-2+"  # the folder glob names no file
    land = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: x\nLicense: GPL-3+\n\n"
            "Files: images/land/*\nCopyright: Various\nLicense: public-domain\n\n"
            "Files: images/land/bwerner*\nCopyright: z\nLicense: CC-BY-SA-3.0\n\n"
            "Files:\n images/land/lava0*\nCopyright: USGS\nLicense: public-domain\n\n"
            "Files:\n images/land/nasa*\n images/land/space*\nCopyright: NASA\nLicense: public-domain\n")
    pkg = data.PACKAGES["endless-sky-high-dpi"]
    assert data.package_license(land, pkg, "nasa3@2x.jpg") == "public-domain"
    assert data.package_license(land, pkg, "bwerner0@2x.jpg") == "CC-BY-SA-3.0"
    with pytest.raises(InputError, match="only CC0-1.0"):
        data.check_license(data.package_license(land, pkg, "bwerner0@2x.jpg"), "bwerner0@2x.jpg")
    shipped = {f.path for f in data.PHOTO_FILES if f.package == "endless-sky-high-dpi"}
    assert "space2@2x.jpg" not in shipped and all(p.split("@")[0].rstrip("0123456789") in
                                                   ("nasa", "space", "station", "earthrise", "desert", "lava")
                                                   for p in shipped)
