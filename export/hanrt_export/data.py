"""Training photos from the package registries, reproducibly.

Debian's ``lomiri-wallpapers-16.04`` (version 20.04.0-2) ships real photos; we use only the
CC-BY-4.0 and CC0-1.0 ones listed below (licences from the package's ``copyright`` file). The
package is fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no system install),
and every photo is checked against its sha256.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hanrt.io.digest import sha256_file
from hanrt.errors import HanrtError, InputError, MissingDependencyError
from hanrt.io.atomic import atomic_output

log = logging.getLogger(__name__)

__all__ = ["Photo", "TRAIN_PHOTOS", "DEB_PACKAGE", "DEB_VERSION", "fetch_training_photos", "notice_text"]

DEB_PACKAGE = "lomiri-wallpapers-16.04"
DEB_VERSION = "20.04.0-2"
_DEB_DIR = "usr/share/backgrounds"


@dataclass(frozen=True)
class Photo:
    file: str
    author: str
    year: int
    license: str
    sha256: str


TRAIN_PHOTOS: tuple[Photo, ...] = (
    Photo("aitzgorri_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", 2018, "CC-BY-4.0",
          "66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36"),
    Photo("friends_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", 2018, "CC-BY-4.0",
          "cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d"),
    Photo("life_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", 2018, "CC-BY-4.0",
          "4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05"),
    Photo("picosdeeuropa_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", 2018, "CC-BY-4.0",
          "414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a"),
    Photo("sunset_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", 2018, "CC-BY-4.0",
          "474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18"),
    Photo("Picture_0B_by_freespace.jpg", 'Trevor "Freespace"', 2018, "CC-BY-4.0",
          "c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad"),
    Photo("Picture_1A_by_freespace.jpg", 'Trevor "Freespace"', 2018, "CC-BY-4.0",
          "89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b"),
    Photo("Wine_by_Jakkub_Mede.jpg", "Jakub Mede", 2018, "CC-BY-4.0",
          "d2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74"),
    Photo("seeding_by_Clements_Engelhardt.jpg", "Clemens Engelhardt", 2018, "CC0-1.0",
          "a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f"),
)


def fetch_training_photos(dest: str | Path, *, deb: str | Path | None = None) -> list[Path]:
    """Put the licensed training photos into ``dest`` (verified by sha256) and return their paths.

    ``deb``: an already downloaded ``.deb`` of the package; otherwise ``apt-get download`` fetches
    it (needs Debian/Ubuntu's apt and a reachable mirror). Photos already present and intact are
    kept.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    missing = [ph for ph in TRAIN_PHOTOS if not (dest / ph.file).is_file() or sha256_file(dest / ph.file) != ph.sha256]
    if missing:
        with tempfile.TemporaryDirectory(prefix="hanrt-photos-") as td:
            tdp = Path(td)
            if deb is None:
                if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
                    raise MissingDependencyError(
                        "fetching the training photos needs apt-get and dpkg (Debian/Ubuntu); "
                        f"download {DEB_PACKAGE}_{DEB_VERSION}_all.deb elsewhere and pass --deb PATH."
                    )
                r = subprocess.run(["apt-get", "download", f"{DEB_PACKAGE}={DEB_VERSION}"], cwd=tdp,
                                   capture_output=True, text=True)
                debs = list(tdp.glob("*.deb"))
                if r.returncode != 0 or not debs:
                    raise HanrtError(
                        f"apt-get download {DEB_PACKAGE}={DEB_VERSION} failed: {r.stderr.strip()[-300:]} "
                        "(run 'apt-get update' first?)"
                    )
                deb = debs[0]
            ex = tdp / "x"
            r = subprocess.run(["dpkg", "-x", str(deb), str(ex)], capture_output=True, text=True)
            if r.returncode != 0:
                raise InputError(f"dpkg -x {deb} failed: {r.stderr.strip()[-300:]}")
            for ph in missing:
                src = ex / _DEB_DIR / ph.file
                if not src.is_file():
                    raise InputError(f"{ph.file} is not in {deb}; is it version {DEB_VERSION}?")
                got = sha256_file(src)
                if got != ph.sha256:
                    raise InputError(f"{ph.file}: sha256 {got} != expected {ph.sha256}; refusing it.")
                with atomic_output(dest / ph.file) as tmp:
                    shutil.copyfile(src, tmp)
                log.info("fetched %s (%s, %s)", ph.file, ph.author, ph.license)
    return [dest / ph.file for ph in TRAIN_PHOTOS]


def notice_text() -> str:
    """The NOTICE that ships beside weights trained on these photos (credits the photographers)."""
    lines = [
        "hanrt bundled model: training data credits",
        "",
        f"The bundled HAN weights were trained on photos from Debian's {DEB_PACKAGE} package,",
        f"version {DEB_VERSION} (upstream: lomiri-wallpapers, UBports). Only photos licensed",
        "CC-BY-4.0 or CC0-1.0 were used. The photos themselves are not redistributed with hanrt.",
        "",
    ]
    for ph in TRAIN_PHOTOS:
        lines.append(f"- {ph.file}: (c) {ph.year} {ph.author}, {ph.license}")
    lines += [
        "",
        "CC-BY-4.0: https://creativecommons.org/licenses/by/4.0/",
        "CC0-1.0:   https://creativecommons.org/publicdomain/zero/1.0/",
        "",
        "Held-out evaluation photos (never trained on): scikit-image's astronaut, camera, chelsea,",
        "coffee, rocket, coins, moon, brick, grass, gravel, hubble_deep_field and matplotlib's",
        "grace_hopper (CC0 / public domain).",
    ]
    return "\n".join(lines) + "\n"
