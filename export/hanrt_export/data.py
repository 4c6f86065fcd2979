"""Training data from the package registries, reproducibly: photos, line art, screenshots.

Three kinds, each in its own subfolder of the fetch folder (``hanrt train --data DIR`` reads
them all, recursively):

* ``photos/``: real photos (:data:`PHOTO_FILES`): from Debian's ``lomiri-wallpapers-16.04``
  (version 20.04.0-2), only the CC-BY-4.0 and CC0-1.0 ones (:data:`TRAIN_PHOTOS`); one from
  ``sddm-theme-maldives`` (CC-BY-3.0), one from ``budgie-core`` (CC0-1.0) and Endless Sky's
  NASA / USGS landing photos (``endless-sky-high-dpi``, public domain).
* ``lineart/``: drawings and cartoons from Debian's ``openclipart-png`` (Openclipart 0.18,
  public-domain dedication for the whole collection; :data:`LINE_ART`, a bounded selection of
  the larger detailed drawings), alpha flattened onto white.
* ``screens/``: screenshot-like images generated here from a seed (:mod:`hanrt_export.screens`).

Licences are taken per file from the package's ``copyright`` file at fetch time (machine-
readable DEP-5 files are parsed with the standard library's RFC 822 header parser) and anything but CC0 / CC-BY / public
domain is refused, even when the table below says otherwise. Packages are fetched with
``apt-get download`` and unpacked with ``dpkg -x`` (no system install); every source file is
checked against its sha256, every written file against the sha256 of its pixels.

Rejected sources (licences from their Debian ``copyright`` files): lomiri-wallpapers-20.04 (all
four photos CC-BY-SA-3.0), lomiri-wallpapers (one CC-BY-SA-3.0 image), the CC-BY-SA-4.0 photos of
lomiri-wallpapers-16.04, gnome-backgrounds (CC-BY-SA-3.0), ukui-wallpapers (CC-BY-SA-3.0),
mate-backgrounds (GPL-2+ and CC-BY-SA-4.0), sddm-theme-maldives' maldives.jpg (CC-BY-SA-3.0),
KDE Plasma wallpapers (GPL / CC-BY-SA), mate-screensaver's cosmos (GPL), stellarium, xplanet and palapeli
images (GPL), forensics-samples (CC-BY-SA). Openclipart drawings whose SVG (openclipart-svg)
names no author or no licence were left out.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from hanrt.io.digest import sha256_file
from hanrt.errors import HanrtError, InputError, MissingDependencyError
from hanrt.io.atomic import atomic_output

log = logging.getLogger(__name__)

__all__ = ["Photo", "TRAIN_PHOTOS", "DEB_PACKAGE", "DEB_VERSION", "fetch_training_photos", "notice_text",
           "Package", "DataFile", "PHOTO_FILES", "LINE_ART", "SCREENS", "SCREENS_RENDERER", "PACKAGES", "KINDS",
           "ALLOWED_LICENSES",
           "check_license", "package_license", "deb_package_name", "pixel_sha256", "fetch_training_data"]

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
    Photo("umang_by_Abhishek_Mudgal.jpg", "Abhishek Mudgal", 2018, "CC-BY-4.0",
          "bfb425545e77e9f0eb1b037b607fc9ed4a446f3b0f04aa2879be3556073c57ef"),
)


def fetch_training_photos(dest: str | Path, *, deb: str | Path | None = None,
                          debs: Mapping[str, str | Path] | None = None) -> list[Path]:
    """Put every licensed training photo (:data:`PHOTO_FILES`, from all their packages) flat into
    ``dest`` and return their paths: licence-checked against each package's copyright file and
    verified by sha256, like :func:`fetch_training_data` (which puts them in ``dest/photos``).

    ``deb`` / ``debs``: already downloaded ``.deb`` files (one, or by package name); otherwise
    ``apt-get download`` fetches them (needs Debian/Ubuntu's apt and a reachable mirror). Photos
    already present and intact are kept.
    """
    debs = dict(debs or {})
    if deb is not None:
        debs[deb_package_name(deb)] = deb
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return _fetch_files(PHOTO_FILES, lambda f: dest / f.out_name, debs)


def _unpack(package: str, version: str, deb: str | Path | None, work: Path) -> Path:
    """Unpack ``deb`` (or ``package=version`` fetched by ``apt-get download``) under ``work``."""
    if deb is None:
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise MissingDependencyError(
                f"fetching {package} needs apt-get and dpkg (Debian/Ubuntu); "
                f"download {package}_{version}_*.deb elsewhere and pass it with --deb PATH."
            )
        dl = work / f"dl-{package}"
        dl.mkdir()
        r = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=dl, capture_output=True, text=True)
        debs = list(dl.glob("*.deb"))
        if r.returncode != 0 or not debs:
            raise HanrtError(
                f"apt-get download {package}={version} failed: {r.stderr.strip()[-300:]} "
                "(run 'apt-get update' first? is the package in this distribution?)"
            )
        deb = debs[0]
        log.info("downloaded %s (%.1f MB)", deb.name, deb.stat().st_size / 1e6)
    ex = work / f"x-{package}"
    r = subprocess.run(["dpkg", "-x", str(deb), str(ex)], capture_output=True, text=True)
    if r.returncode != 0:
        raise InputError(f"dpkg -x {deb} failed: {r.stderr.strip()[-300:]}")
    return ex


def deb_package_name(deb: str | Path) -> str:
    """The Package field of a ``.deb`` (InputError if it is not one)."""
    r = subprocess.run(["dpkg-deb", "-f", str(deb), "Package"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        raise InputError(f"{deb} is not a readable .deb: {r.stderr.strip()[-300:]}")
    return r.stdout.strip()


def _verified(ex: Path, rel: str, sha256: str, version: str) -> Path:
    """The unpacked file ``rel`` after checking its sha256 (InputError naming the file if not)."""
    src = ex / rel
    if not src.is_file():
        raise InputError(f"{rel} is not in the package; is it version {version}?")
    got = sha256_file(src)
    if got != sha256:
        raise InputError(f"{Path(rel).name}: sha256 {got} != expected {sha256}; refusing it.")
    return src


# --------------------------------------------------------------------------------------------
# Every kind: photos, line art, generated screenshots.

KINDS: tuple[str, ...] = ("photos", "lineart", "screens")
ALLOWED_LICENSES: tuple[str, ...] = ("CC0-1.0", "CC-BY-4.0", "CC-BY-3.0", "public-domain")


@dataclass(frozen=True)
class Package:
    """A Debian package that training files come from."""

    name: str
    version: str
    root: str  # folder of the training files inside the package
    deb_bytes: int  # size of the .deb (what one fetch downloads)
    upstream: str
    # For a copyright file that is not machine-readable (DEP-5): the licence it gives every file,
    # accepted only if ``license_phrase`` is in it.
    license: str | None = None
    license_phrase: str | None = None


PACKAGES: dict[str, Package] = {
    DEB_PACKAGE: Package(DEB_PACKAGE, DEB_VERSION, _DEB_DIR, 15_783_184,
                         "lomiri-wallpapers, UBports (https://gitlab.com/ubports/development/core/lomiri-wallpapers)"),
    "openclipart-png": Package("openclipart-png", "1:0.18+dfsg-19", "usr/share/openclipart/png", 130_910_028,
                               "Open Clip Art Library 0.18 (http://www.openclipart.org)",
                               license="public-domain", license_phrase="Public Domain Dedication"),
    "sddm-theme-maldives": Package("sddm-theme-maldives", "0.19.0-5", "usr/share/sddm/themes/maldives", 1_248_792,
                                   "SDDM (https://github.com/sddm/sddm), photo from Wikimedia Commons"),
    "budgie-core": Package("budgie-core", "10.7.1-1", "usr/share/backgrounds/budgie", 2_316_360,
                           "Budgie Desktop (https://github.com/BuddiesOfBudgie/budgie-desktop)"),
    "endless-sky-high-dpi": Package("endless-sky-high-dpi", "0.9.8-1",
                                    "usr/share/games/endless-sky/plugins/endless-sky-high-dpi/images/land",
                                    135_643_966, "Endless Sky (https://github.com/endless-sky/endless-sky)"),
}


@dataclass(frozen=True)
class DataFile:
    """One training file taken from a package: where, whose, which licence, which bytes."""

    kind: str  # "photos" or "lineart"
    package: str  # key of PACKAGES
    path: str  # inside the package's root
    author: str
    license: str
    sha256: str  # of the file in the package
    pixels: str = ""  # lineart: sha256 of the written image's pixels (see pixel_sha256)
    year: int | None = None
    name: str = ""  # the written file's name, where the package's is too generic ("default.jpg")

    @property
    def file(self) -> str:
        return self.name or Path(self.path).name

    @property
    def out_name(self) -> str:
        """The name it is written under (line art: always a PNG, flattened)."""
        return self.file if self.kind == "photos" else Path(self.file).with_suffix(".png").name


def _clip(path: str, author: str, sha256: str, pixels: str = "") -> DataFile:
    return DataFile("lineart", "openclipart-png", path, author, "public-domain", sha256, pixels)


_LOMIRI_PHOTOS: tuple[DataFile, ...] = tuple(
    DataFile("photos", DEB_PACKAGE, ph.file, ph.author, ph.license, ph.sha256, year=ph.year) for ph in TRAIN_PHOTOS)


def _land(path: str, author: str, sha256: str) -> DataFile:
    return DataFile("photos", "endless-sky-high-dpi", path, author, "public-domain", sha256)


# More photos: a beach (CC-BY-3.0, sddm-theme-maldives), a
# landscape (CC0, Budgie's default wallpaper) and Endless Sky's landing photos that its copyright
# file credits to NASA or the USGS (US government works, public domain). Left out of Endless Sky:
# space2 (credited both to NASA and to unsplash.com), the morguefile/unsplash "donated" photos
# (an unverifiable public-domain claim) and every CC-BY-SA photo.
PHOTO_FILES: tuple[DataFile, ...] = (
    *_LOMIRI_PHOTOS,
    DataFile("photos", "sddm-theme-maldives", "background.jpg", "Nevit Dilmen", "CC-BY-3.0",
             "032d28ee4f3d885e9340ae430457fd59341e9fbf8ca45502d86ad14362ffb4a0", year=2008,
             name="maldives_background.jpg"),
    DataFile("photos", "budgie-core", "default.jpg", "Budgie Desktop Developers", "CC0-1.0",
             "4995228348caa1e905c455d4ad5023869e76ac35564c766372060bcf96de1ea1", name="budgie_default.jpg"),
    _land("desert0@2x.jpg", "NASA", "c12b8597e74e15a643cccd46551a30d0c1bbdb3f021a671ccf69038557fe242e"),
    _land("earthrise@2x.jpg", "NASA", "1d459c1735f9f40da32a064c06de155c046fc6a5f1b433193d1e376d3ff68c4c"),
    _land("lava0@2x.jpg", "USGS", "a5984091dfb6bd6ecd0d1d678cfa8d49810f126922b0fd49b82be602c9d355bb"),
    _land("nasa0@2x.jpg", "NASA", "4a41ee6d2d8608f0c2b74aeab95914c615b2760d1af17f8570fbd74065291f90"),
    _land("nasa1@2x.jpg", "NASA", "633d15cd9193211edfa2536b00d8c2257dbc6bc549c1458d7e28b96c53f53137"),
    _land("nasa2@2x.jpg", "NASA", "58dc67f81444a03a799458d179ab3170874ce4b1827937d593893706af60caa3"),
    _land("nasa3@2x.jpg", "NASA", "7686f341042cfba8d0c3864a76a57609d159ba9fa655fea0705d3eda0982c2c5"),
    _land("nasa4@2x.jpg", "NASA", "240a6a5de3701b67df5b46157113c2666d1078dae530fc5d3746de4aebc38466"),
    _land("nasa5@2x.jpg", "NASA", "cac7bdef95abb4a6df4d33fe3d8fba79424b6c63a966e1f442d742e5c3f27b5b"),
    _land("nasa6@2x.jpg", "NASA", "a4aed4d54f90cd996f65381ab6d1efe0ac8a2391a06d27388b9c75199317a4ca"),
    _land("nasa7@2x.jpg", "NASA", "06d18d187be1ef6e7b652e487e0fb996f6e37e4d3df282ae0173c3eee272a096"),
    _land("nasa8@2x.jpg", "NASA", "bbcc2ed911af7e5b2f4aa7a219f2638187a098823b3b8e657a2fca719cb053f6"),
    _land("nasa9@2x.jpg", "NASA", "5bb0208aa665314f90437514950469ff0cc8bc8a8406de59b8097509485bfd29"),
    _land("space0@2x.jpg", "NASA", "f33cc2ec6b20e4eb2b36d5b907b40b5addd587aed2187d3a1c9684fc1cad55c5"),
    _land("space1@2x.jpg", "NASA", "1ea1cd1aa85eee694c6507677a91c6aa0bec942f27f708823c2ba7b807e91ecb"),
    _land("space3@2x.jpg", "NASA", "0bd9db2e333fa80697fef4cc83eb21bba5e087bcf26e810160fe50c0f756b730"),
    _land("space4@2x.jpg", "NASA", "18aa2baa4a6f252640da7ea7101f96a9fb69890d55d5c1f84552a9cf7115960a"),
    _land("space5@2x.jpg", "NASA", "018f98826b2085c0c862a1d8b660072dd66f383c9581a6c3c01ec68d70a1b877"),
    _land("space6@2x.jpg", "NASA", "bc53447ec0bc0f86354c349decdbd31edd017fa8f8c8fd1bbe6b4bb640687267"),
    _land("space7@2x.jpg", "NASA", "06cf0ffd5ea7782e4e8f96a5fc3fbf3b89ad922c3a408dad880a655bed65883a"),
    _land("station1@2x.jpg", "NASA", "a711918f4d2a960cedf55a9aee9a3e8b707549bf08a412fc0bb8f973e5aa0de7"),
    _land("station2@2x.jpg", "NASA", "f6ddf98241c5345d2cdcd323336d69cbace9f029eff587df6827347354d6ce21"),
    _land("station3@2x.jpg", "NASA", "16fc705447b21d2b29baee34421ae58af3472c570e50230be82ed676869bce05"),
    _land("station4@2x.jpg", "NASA", "3c0d4e90e5665e9d5aaa4ac7d0539030ef82a5e9d85faacde34dce37289fa9d7"),
)

# Openclipart drawings: 0.6-5 MP, at least 15 % of the page drawn, detailed (mean luma gradient),
# at most 8 per top-level category, de-duplicated; authors from openclipart-svg's metadata.
LINE_ART: tuple[DataFile, ...] = (
    _clip("recreation/religion/daedalus_and_ikarus_pete_01.png", "peterm",
          "377f4c4a282738e4c9509e5adf388fd5a62b7acecde916c124dc625052af676f",
          "0e58ebf26a7b287462ca0564b75317c3b8842429b0cb37ce9a08d88e1d570846"),
    _clip("unsorted/mygraph_john_rariden_01.png", "John Rariden",
          "83bf25439b1c905f7308a73823a941ab91a5e936a8a052a9da238fdb1214fce2",
          "174b9f303b17d507de6e1d5322e2344c4e27c1dbf129334490a13ddfe137a50c"),
    _clip("transportation/bmw_z_from_top_aubanel_.png", "Aubanel MONNIER",
          "6ba4b8ecbfb9bcb66d4b75e87908bb4a6a17910cdfc1ad4980bd4c956c316809",
          "eccba01076baa8ea691facdd6b9c98ba46057e80d787608a7166878bdc80a5fc"),
    _clip("unsorted/landscape_near_the_river_01.png", "Bruno Coudoin",
          "e16efdf385f15ea53b95aa893add401b0cee8a5fbc2b0ce5006a3a33e1e04afb",
          "e365628378ca558a05629cc978377473868148d2ae131b4aa820bcbc02fa1d13"),
    _clip("people/grampa_39_n_gramma_celso_02.png", "Celso Junior",
          "0103c6eb6a436f72c54886d4e3a3c7fa9fe31a156bf09d0d092ce325eba3d310",
          "a90724b537bc69cb22a53895b7e866501f43f9b3cbe9004246419a899ab3a6f4"),
    _clip("signs_and_symbols/for_sale_sign_template_01.png", "Jon Phillips",
          "bad6e55d9b300b81b133874dbda391cba1ee5a2d6bb51668a96c827567e6ea1c",
          "b56624b40644aaf8bb9b56c693799c7d5888cbb8c96d3405cad27a8039dea79c"),
    _clip("recreation/holiday/valentines/heart_tiles_jon_phillips_01.png", "Jon Phillips",
          "6e22827121fe650becb803b7acf608461735ddef65dfc86c697c0158038f2e02",
          "aac4a3aceef62228466a1440bec357a3ef339a687cb92a6703ee2433b9c37f38"),
    _clip("plants/cacuts_01.png", "Joshua Warren",
          "e056987006638a33df9ef41454a39881625daa6a9e8bb1cccde269de6d45a77d",
          "6d39072843526a68a74145a0fa0af6a5a01f2fb62a1d0319df529a4854109169"),
    _clip("animals/mammals/big_cats/tiger_graig_ryan_smith_-_01.png", "Graig Ryan Smith",
          "0281014524ce3224c6a895242e3e1b3719a8fb7f0a8cb740faa0ba907afc3f26",
          "6c3cdfb95c8d52ec9a810891097527b6619d112f6b8802e5e3358f5c0723ca8f"),
    _clip("people/my_lovely_baby_enrique_m_01.png", "Enrique Meza C",
          "0197affb085f4042ec0b8d938da5b989677e23320337d5fd8bae97dc9dd95d4b",
          "4a6f253a595b67527fef688985665d83cc6be2d11ac3d11c7144784c2e5e05f2"),
    _clip("animals/birds/mirjam_meijer_mirjam_mei_01.png", "Mirjam Meijer",
          "5d8454b4cde462db87055365308876299457455f2047dd40fd1e7e1b058386c8",
          "c3f41d8dc23ccc39f2300780b5979423879cb18a08f071f73d3d2d1534ef6363"),
    _clip("electronics/pfd_01.png", "Jose Hevia",
          "f86778b76acdb5b9a406c8e842e559f2672cd9e23e6102ed5dee3a4843cc1315",
          "e14fa767dab2d51263b352113bf4ba72e3552bd96b273d3167d879574eee440f"),
    _clip("education/certificate_01.png", "Joshua Warren",
          "85c39c8d5d112805bf1bed785c6977f6af06be2ca8f0f9571f5135f18c361b07",
          "535edf962015164694b56c44e8e5f9ad3e004c6229c203abb972ac037712a96e"),
    _clip("geography/world_map_01.png", "Jose Hevia",
          "9658e9ce63202da3640845f91ec42443d961b6c990fb42acdb2ceeca09be1360",
          "8f1aed9b76e1b6797ac58bbfe1077e9330d16f6863aefc38051f67a5a98fd8e5"),
    _clip("computer/buttons/bunch_o_buttons_christop_.png", "Christoph Brill",
          "a21e2fa5795843ba4dcb58833e2ccf5e85132158a3b0dcfc9d3f4d326a62f834",
          "62863ae069a8e95d09ac7a737ee17bbcd6c7f6e3b70bf0b9a71ceaaf1fc951f6"),
    _clip("electronics/sony_clie_william_page_.png", "William Page",
          "bb156e0b2bbde639487363d5243f7e1a7fc00362b538c5b8684fe675f38787a5",
          "01cacba8a22d6ece2c786b55ccbd21132d3342016ac8b8cbd04a81a9b7bc9a67"),
    _clip("signs_and_symbols/passo_carrabile_yves_gui_01.png", "yves GUILLOU",
          "f9bdc14d4bfc471f54c94120e2414baf8245fd35d2af21aa25643aecff029a21",
          "46befc1091568edd873d88a9d33f73489fc6f9b8d7212ac7f178239b429b594b"),
    _clip("transportation/vehicles/aircraft_jarno_vasamaa1.png", "Jarno Vasamaa",
          "760f9a460309e66dae0ed613c651a2d346ad30bde224e9aa84e33a37cb3f77f9",
          "337f131617ef7b28e7bea10b73091cc26a03c0d32daf338e57f2b6d040300e3c"),
    _clip("people/jazz_enrique_meza_c_01.png", "Enrique Meza C",
          "b4ff42fd60c3c159b66a2a0699c3f153d2893b74341e0edac070136053a86e3d",
          "52981e727b9d584ef377aee6daf1a53455737116933cae9b6bcdcc0fee1a50ad"),
    _clip("people/van_gogh_s_room_enrique__01.png", "Enrique Meza C",
          "32021887d3dcf5cbd3fbf6e4d53a0ca2276f1f1e63eb69b9e5fdf5aa50eecaf6",
          "886e0228c483d0c708b7a4b42497963bd0f3287580663a4d4c7fabee594e9e1c"),
    _clip("geography/map_of_europe_jarno_vasa_01.png", "Jarno Vasamaa",
          "ceff8896bb92e5feebbdd1903cf3835c717a3a1d45a02df61b32aa6d2dbbd0d2",
          "1024248f3a63f0fbbc5f647260f3053bc7ac8dffd9036ae1b2add8b046029054"),
    _clip("office/pinzatrice_rollandin_arc_01.png", "Architetto Francesco Rollandin",
          "0b3a90454d221fa9b0e47ba913c26050b233341afbad97b88bff20acc84bd253",
          "a991f2532d2b9bf25495a3ba1b1d92e8fec8ab225c66f37776fb43fddaf978c5"),
    _clip("animals/mosquito_peterm_01.png", "peterm",
          "d84d3c919c24391740ed271903ee4d8c48444c0d6ebeaab5c47be6431f303966",
          "29bf12dc2ec6dadba67b4b9a55393ceddb4b0778b420b5cde8bc0441263c86b4"),
    _clip("recreation/music/CD_Player/rca_stereo_cd_player_jo_r.png", "Joel Montes de Oca",
          "208cae06a4856c22a6ef9d7db942007114cc55c9dca7b6bcc9353a993c60b6d7",
          "e33c1757a157f9829256ce1462a7104d1f253be7d693a8d5148868a70dffa784"),
    _clip("science/astronomy/the_moon_dan_gerhards_01.png", "Dan Gerhards",
          "70f5cddba3fd39c01f0893eb99659675c59a79388465f756653c6f8130c0e35c",
          "b68453186c90c66c5dfe0c6b734c97546edb559e036b7b161b094025353fdb8e"),
    _clip("animals/fantasy/troll_daniel_steele_r.png", "Daniel Steele",
          "7171ce1e6a46574d716105025d857773a9d9b9435be384b0b0565fe51b5a9a8f",
          "1b76378e91e439d700240e90f7d9bbf424232f2fabba87276f6387dce64c3ad2"),
    _clip("food/fruit/melon_goneri_le_bouder_01.png", "Gonéri Le Bouder",
          "4c083e683716a698ff5646451a5633450417115873cb34a256c88d2f6b431780",
          "aaa9ef6362aabffb4c77327cb18f4c5228fe05a220a10a3da97ac876523d44d8"),
    _clip("people/clothing/wild_summer_shorts_natha_01.png", "Nathan Eady",
          "aee972b609932be91e288c981347c1efeabb254f92be0248d841b5171e35ef1d",
          "584043b638b7a5e71396713fb7dcf685b92fe1679b7c217d84d05f7369c9cfe2"),
    _clip("signs_and_symbols/weather/tsunami_warning_sign_bob_01.png", "bob dagit",
          "49467472cd13b7fc9c4ec5da5502deeacdfc390b954e6acef64531d5c307d7eb",
          "952637a57f14e06c4b9257016db8e0a1aa47af17f0233d52587fd0600f16afa8"),
    _clip("recreation/games/8ball_form_jarno_vasama.png", "Jarno Vasamaa",
          "500be11449ba8a10d0fbe19a123de6c6d5dd470f636d381c9c8775da55b4130c",
          "12528f9c7c5457e4506a5f516d8704872df6aa5ef6ee4350adef750443f23d38"),
    _clip("transportation/truck_jarno_vasamaa1.png", "Jarno Vasamaa",
          "88198fcb593e869396166e39d5cba4ef8dca6ac5c14d35cea5d6662162c5e6c8",
          "c2b024a448881e62155eb4ec348bee0857a83d2bc3cc310e2d3bd477d4f9aed4"),
    _clip("unsorted/otto_needs_you_01.png", "JZA",
          "d448c805ee61017da668fa8b76b863b9f2910236bb1bd81ad9364975a5230a57",
          "7509c3ebf76c06d20a6a833f90d174351cf44467f53aef9b0ab11c4dcae9ff0a"),
    _clip("transportation/bus1_bw_jarno_vasamaa_01.png", "Jarno Vasamaa",
          "97b321ada046804ad1658a442615576870cd0f3f6cd2ad24cc8c62b5b071a8af",
          "788057f7871d7c538918c5309b79cc6705860ffc3dcd48be2166dc3e157fe2ea"),
    _clip("computer/icons/xbill_01.png", "Feth AREZKI",
          "e7a6124e82aff79dc21bb6285b065bd06785752b58ab7922851695c7f963fbc6",
          "492bbeffa94161a8b0954aeeea63218e4e12df6895f3a69ef5f24ce615049717"),
    _clip("computer/pale_server_teudimundo_01.png", "Teudimundo",
          "b1a88a3adbb736942377af1f4952c3b9cc89bb27d63cc6595ab63479a6fa3d8b",
          "5fb5457a25c759a380e484b7721f967b65a112a39e726eddc88c11611de42070"),
    _clip("office/telephone/ip_phone_michael_hart_r.png", "Michael Hart",
          "9d729a0eb738ca23df9d4d9351bb490daf4d18fe5f060c971ace37cde16cd19d",
          "50f05dc5b9491c76571060108ddd31eec45079b2e90589f9d0cc2274cc885814"),
    _clip("recreation/music/vinyl_disc_philippe_coli_01.png", "philippe colin",
          "acd576273e7c6b624bc1f7b1bd8264ca1529c093f4d192af3fade192ef98dd50",
          "ae292ef28886b18a5b4be47d3acf47b1224ca720d18404b7d738c33af109c8a1"),
    _clip("food/pumpkin_erik_postma_01.png", "Erik Postma",
          "f2413ce383a85d9a2db4b3da54ecd5b37c27f9ebb2d0f34e0b4169fa73050ffa",
          "03d0713512b3d70e585841dd55670c194d9b10e45f3e3709050526a0b4040b28"),
    _clip("animals/fantasy/the_incredible_tux_giuli_01.png", "giulio",
          "1a8eacf6327a3e1cdbb1affd982f71b26c1621aabd49ffcbbe84b5b329eefae0",
          "df06eb374d1f10a6ab792859a5cc217afcdf392d305d0aa76adccbabd6e736c8"),
    _clip("geography/map_of_scandinavia_jarno_01.png", "Jarno Vasamaa",
          "a154bbdc27f0b5b547cd99c02d4d30e986f58ed8e94b5cd04885108b2bd22bdc",
          "aad16dcaefd6d970bf3c9d37b50ec5a4a9b3e350430966ec001a27f6e1f33f91"),
    _clip("transportation/truck_jarno_vasamaa_.png", "Jarno Vasamaa",
          "74e4365d9e1f89201530e977635e67caf5398bbabbd6f51be71e314f6a4ddc67",
          "346e9bdf76cd9f6c1b6cc8b3fbb3497a3f2a441a5f1ff215fbd011c01374be61"),
    _clip("food/chef_jarno_vasamaa_.png", "Jarno Vasamaa",
          "eaed8aa31fbc2b548489d0151020033befadfb8ac85dbca5090bf0c078ee2d29",
          "5ad7c6244b65481f7b84f558db09b5fe8b47dd49d775b6718f2d62848d1b2cd0"),
    _clip("computer/icons/applications/stylized_cd_jakob_chaosi_.png", "Jakob",
          "f5d2e41e24674696c05c88b3d73c3c1de87355251ff1d5fc8428e4677579c998",
          "9a8718d35a8c27c084e956e1f898ecf45921998fdfa9a68dd38d299c9b43f8fd"),
    _clip("people/elfish_girl_mo1.png", "mo",
          "36cd10ebc7d07282739a0906b2dfbb5f00e4465a9a2f3d1ea58be7a8d8fbe0c7",
          "53946db2191f20c85491e8dfff7e4a2a4bef6d6417cf874f54b9d7bad85db710"),
    _clip("signs_and_symbols/radioactive_sign_01.png", "Cosmin Stroe",
          "b2059576a1989e6a6df845cf900d9cfb9eedbe7c584d20de98488083f73f7428",
          "2ec02ff73174e53449c7cc5e4968761ff64352c0defc5c078d5b2d13e2d3c5d4"),
    _clip("people/rich_young_man_counting_01.png", "Galion GBC",
          "4f56a32ef582b17f5943fc936473314d78fd1c9dd188ce35e67c33dcbfee5d6f",
          "14229ec69aaf6b3e60119dc52c1678cea7c007a962e0f0f90454d2e10634c545"),
    _clip("computer/phone_sergio_luiz_araujo_01.png", "Sergio Luiz Araujo Silva",
          "cb56bd892eb4c46a5c42d89b1dd71d3e458e9d82b27791b63d9404738e390490",
          "92147cf957b7ed65a894d8684014335a32372592efd686ef4fa92326384195c0"),
    _clip("transportation/bus2_jarno_vasamaa_01.png", "Jarno Vasamaa",
          "1a145e671c9f7c6bac3c57e2a1611f8714e1e613dffc03934cad3e1ae63b2225",
          "f3271ea5789665c39da0eda679df63c02bc1a3bf9d68853c02a90b2eccdb868f"),
    _clip("food/beverages/milk_carton_jarno_vasama_.png", "Jarno Vasamaa",
          "7be587d2ddeff1040df8132bcb20f51f226d55b0dbd4cda12e17836c38e4f5b6",
          "1c4517b72fc8e73c4598e91c29c1c8d2179ccfb6840d215a7f193b776daecec0"),
    _clip("computer/icons/newspaper_aubanel_monnie_01.png", "Aubanel MONNIER",
          "c7f2de700933098bfc97c6364fb26e01ed70d35f3d64d950f5bbe9e543be7baa",
          "e2dc0de665765a01b3fe9b505b5719e08aba12ecb987a3bc8e97ab891ae947e1"),
    _clip("transportation/boating/boat_jarno_vasamaa1.png", "Jarno Vasamaa",
          "8fcb4286571f15efe02e4be6cf585d36d33ed41fd14517408349134de437aa3b",
          "bbae63afea96be04649e6ce8948f1c3aece0e8d307ae86c228142a5a7454a7a1"),
    _clip("geography/australia-shading-with-boundaries.png", "Chris Goerner",
          "a06fc51cf2b21fae42bce95bb650dfc609611467164496b57c6be6d98e06bf20",
          "494476c2309898eafa0c9bf6466a09b482caacf25f36a8c8dd44a75fd41d8fab"),
    _clip("plants/trees/fern_mo_01.png", "mo",
          "1289ff1086632f9fafec308c18473e2e0466994add21ef1f127b4e8d375f1551",
          "b65731115e872e401cb0381be814c3bbaaa88e944a510e29e8f1a9f1558c7301"),
    _clip("transportation/old_car_lumen_design_st_r.png", "Lumen Design Studio",
          "b7f81e48827656dd68b94d5f5b51a00492d2cb653618c8f6048b23e1301a1e7d",
          "b2bbce3958f12a1c4503c645094345e1d9c0540a694cd26dd6d7821297257016"),
)

# Generated screenshot-like images (hanrt_export.screens.make_screen): (seed, pixel sha256). The
# digests were recorded with Pillow 13.0.0 (FreeType 2.14.3) and the font versions listed in
# hanrt_bench.docpages.FONTS; other versions may render other pixels (--accept-new-screens).
SCREENS_RENDERER = {"pillow": "13.0.0", "freetype2": "2.14.3"}
SCREENS: tuple[tuple[int, str], ...] = (
    (100, "5a8ffd502100687ca83217c14b8791ab5f07729dbeeebe405575ad1bd6867b87"),
    (101, "17bc9903dc95a4f394c34ca4bcb9b48a7d4e24f5868c771c9a3ce26ba19f0c90"),
    (102, "95844711cf198735657054e7740ea3fb459300cf49a867a98b8f42c9d16627cb"),
    (103, "4a283299face9a26acd8b01534e1440b0c54952445b902c85a6b5fc453456863"),
    (104, "b9bfbdb3296c54f834a7429896e2679ede7271e13d75085f8e523426d9258071"),
    (105, "23ad52b4d4e7bdf2a7c7b7f965487ae8b1c87e657b5becc953f69927fe08b422"),
    (106, "6371e1f09f3259bb4b907de027bc64836bcdecb7dd16e052ec16c8e2e85d55a2"),
    (107, "b9a708f2e3a3ae8d2168ffbb373c1d221c2b7c61b01853e8b4af8d68f6ec778c"),
    (108, "f4a2d281bec4a28804ce79b5361408951c68a8217b80050ea3dff545a285956f"),
    (109, "9c2e2e215a0b4ee44ec7a52ea1f1f8b6428e8447ec4ec90597c799c5af9377f4"),
    (110, "88c63c8dad53169cdf7a3243a7583856d4abbb42733fdccfb50854c85c845b6c"),
    (111, "32d9aca22840ff9f4412d46f5ae325f230340163d3c882e3f38e5f2e861ca4b1"),
    (112, "9db45b9252faa06a16a7c33c32f378634209f587e1b87c71d966380cf8192b55"),
    (113, "79c53615ef11a94e32c2e2ce335bb9a927ee10383c37e4ecfd79d23920853c07"),
    (114, "1e683611178da386e3337a9aa028cbf96eb36427aa1a6a55c5fe472afe0fbda2"),
    (115, "b3f244a2847d4e74b3a10a5adc110672b70351fa876a6db0f0027223aea43f99"),
    (116, "fffc8307a0c3813aafad82b4887890941749cb5a4d23d51e55cf1400717b9851"),
    (117, "b7d13d1e5cb66fb1e55cc3646131a2ee0ba91af630f51db9c01b64f50a4df381"),
    (118, "644bb17e7984f3b45da72af5252dde2901deec715f95b8685bb6e5969ee2df3a"),
    (119, "ed12c53f8a073e4ea1a4b2529608b50c128178a432cb9f6e0b2d7f8652f143e8"),
)


def _screen_name(seed: int) -> str:
    return f"screen_{seed:04d}.png"


def pixel_sha256(im) -> str:
    """sha256 of an image's size and RGB pixels (independent of how the PNG was compressed)."""
    im = im.convert("RGB")
    return hashlib.sha256(f"{im.width}x{im.height}:".encode() + im.tobytes()).hexdigest()


def _file_pixels(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return pixel_sha256(im)
    except (OSError, ValueError):
        return None


def check_license(license: str, what: str) -> None:
    """InputError unless ``license`` is CC0, CC-BY or public domain."""
    if license not in ALLOWED_LICENSES:
        raise InputError(f"{what} is licensed {license!r}; only {', '.join(ALLOWED_LICENSES)} may be "
                         "used as training data (copyleft and unclear licences are refused).")


def _dep5_paragraphs(text: str) -> list | None:
    """The paragraphs of a machine-readable Debian copyright file (DEP-5, deb822 syntax) as
    ``email.message.Message`` headers, or None when the file is not machine-readable."""
    from email.parser import HeaderParser

    paras, cur = [], []
    for line in [*text.splitlines(), ""]:
        if line.strip():
            cur.append(line)
        elif cur:
            paras.append(HeaderParser().parsestr("\n".join(cur) + "\n"))
            cur = []
    if not paras or not (paras[0].get("Format") or "").strip().startswith("http"):
        return None
    return paras


def package_license(copyright_text: str, pkg: Package, path: str) -> str:
    """The licence that the package's copyright file gives ``path`` (relative to ``pkg.root``).

    Machine-readable files (DEP-5): the last Files paragraph whose pattern matches the file (its
    source path, or its base name when the source tree keeps it in a subfolder). Others: the
    package-wide licence recorded in :data:`PACKAGES`, if the file states it."""
    paras = _dep5_paragraphs(copyright_text)
    if paras is None:
        if pkg.license and pkg.license_phrase and pkg.license_phrase in copyright_text:
            return pkg.license
        raise InputError(f"{pkg.name}'s copyright file gives no licence for {path} that this fetcher can read; "
                         "refusing it.")
    name, lic = Path(path).name, None
    for para in paras:
        for pat in (para.get("Files") or "").split():
            base = pat.rsplit("/", 1)[-1]
            named = base.strip("*?") != "" and fnmatch(name, base)  # '16.04/x.jpg' -> x.jpg; not 'debian/*'
            if fnmatch(path, pat) or ("/" in pat and named):
                value = (para.get("License") or "").strip()
                lic = value.splitlines()[0].strip() if value else None
    if not lic:
        raise InputError(f"{pkg.name}'s copyright file names no licence for {path}; refusing it.")
    return lic


def _flatten(src: Path):
    """RGB image of ``src`` with any transparency composited onto white."""
    from PIL import Image

    with Image.open(src) as im:
        rgba = im.convert("RGBA")
    out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    out.alpha_composite(rgba)
    return out.convert("RGB")


def _intact(f: DataFile, path: Path) -> bool:
    if not path.is_file():
        return False
    return sha256_file(path) == f.sha256 if f.kind == "photos" else _file_pixels(path) == f.pixels


def _fetch_files(files: Iterable[DataFile], target_of, debs: Mapping[str, str | Path]) -> list[Path]:
    """Write each of ``files`` to ``target_of(file)`` (kept when already intact): every package
    unpacked once, each file's licence read from the package's copyright file and checked, its
    bytes (line art: flattened pixels) checked by sha256, written atomically. The paths, in order."""
    files = list(files)
    unknown = sorted(set(debs) - set(PACKAGES))
    if unknown:
        raise InputError(f"no training data comes from package(s) {unknown}; the sources are {', '.join(PACKAGES)}.")
    for pkg_name in dict.fromkeys(f.package for f in files):
        pkg = PACKAGES[pkg_name]
        missing = [f for f in files if f.package == pkg_name and not _intact(f, target_of(f))]
        if not missing:
            continue
        with tempfile.TemporaryDirectory(prefix="hanrt-data-") as td:
            ex = _unpack(pkg.name, pkg.version, debs.get(pkg.name), Path(td))
            cr = ex / "usr/share/doc" / pkg.name / "copyright"
            if not cr.is_file():
                raise InputError(f"{pkg.name} has no copyright file; its licences cannot be checked.")
            copyright_text = cr.read_text(errors="replace")
            for f in missing:
                lic = package_license(copyright_text, pkg, f.path)
                check_license(lic, f"{pkg.name}: {f.path}")
                if lic != f.license:
                    raise InputError(f"{pkg.name}: {f.path} is licensed {lic} by the package's copyright file, "
                                     f"not {f.license} as recorded; refusing it.")
                src = _verified(ex, f"{pkg.root}/{f.path}", f.sha256, pkg.version)
                target = target_of(f)
                target.parent.mkdir(parents=True, exist_ok=True)
                if f.kind == "photos":
                    with atomic_output(target) as tmp:
                        shutil.copyfile(src, tmp)
                else:
                    im = _flatten(src)
                    got = pixel_sha256(im)
                    if got != f.pixels:
                        raise InputError(f"{f.file}: flattened pixels sha256 {got} != expected {f.pixels}; "
                                         "refusing it (a different Pillow?).")
                    with atomic_output(target) as tmp:
                        im.save(tmp, format="PNG")
                log.info("fetched %s (%s, %s)", f.file, f.author, f.license)
    return [target_of(f) for f in files]


def fetch_training_data(dest: str | Path, *, kinds: Iterable[str] = KINDS,
                        debs: Mapping[str, str | Path] | None = None,
                        accept_new_screens: bool = False) -> dict[str, list[Path]]:
    """Put every kind of training data into ``dest/<kind>/`` and return the paths by kind.

    Package files are licence-checked against the package's copyright file and sha256-checked;
    line art is flattened onto white and its pixels checked too; screenshots are generated and
    their pixels checked (``accept_new_screens``: keep them when the fonts or Pillow render
    differently from the recorded digests, with a warning). ``debs``: already downloaded ``.deb``
    files by package name (else ``apt-get download``). Files already present and intact are kept;
    every file is written atomically. A ``NOTICE`` crediting every file goes beside them.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise InputError(f"unknown training data kind(s) {bad}; choose from {', '.join(KINDS)}.")
    debs = dict(debs or {})
    out: dict[str, list[Path]] = {}
    files = [f for f in (*PHOTO_FILES, *LINE_ART) if f.kind in kinds]
    for f, path in zip(files, _fetch_files(files, lambda f: dest / f.kind / f.out_name, debs)):
        out.setdefault(f.kind, []).append(path)
    if "screens" in kinds:
        out["screens"] = _write_screens(dest / "screens", accept_new_screens)
    with atomic_output(dest / "NOTICE") as tmp:
        Path(tmp).write_text(notice_text(kinds))
    return out


def _write_screens(folder: Path, accept_new: bool) -> list[Path]:
    from .screens import make_screen

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, digest in SCREENS:
        target = folder / _screen_name(seed)
        paths.append(target)
        if target.is_file() and _file_pixels(target) == digest:
            continue
        im = make_screen(seed)
        got = pixel_sha256(im)
        if got != digest:
            msg = (f"generated {target.name} (seed {seed}) has pixels sha256 {got}, not the recorded {digest}: "
                   "the fonts or Pillow render differently from when the digests were recorded")
            if not accept_new:
                raise InputError(msg + "; install the font versions listed in hanrt_bench.docpages.FONTS, or "
                                 "pass --accept-new-screens to keep the new renderings.")
            log.warning("%s; kept (--accept-new-screens).", msg)
        with atomic_output(target) as tmp:
            im.save(tmp, format="PNG")
    return paths


def notice_text(kinds: Iterable[str] = KINDS, used: Iterable[str] | None = None) -> str:
    """The NOTICE that ships beside weights trained on this data: every file's source package and
    version, author, licence and sha256 (``kinds``: the kinds the weights were trained on;
    ``used``: if given, the file names trained on — files of the set left out, e.g. held out for
    evaluation, are not listed)."""
    kinds = tuple(kinds)
    names = None if used is None else {Path(u).name for u in used}
    lines = [
        "hanrt bundled model: training data credits",
        "",
        "The bundled HAN weights were trained on the files below. Only files licensed CC0-1.0,",
        "CC-BY-4.0, CC-BY-3.0 or public domain were used (licences from each Debian package's copyright file).",
        "The training files themselves are not redistributed with hanrt; `hanrt train --fetch-data DIR`",
        "fetches them (sha256 below: of the file in the package).",
    ]
    headings = {"photos": "Photos", "lineart": "Line art (transparency flattened onto white)"}
    for kind, files in (("photos", PHOTO_FILES), ("lineart", LINE_ART)):
        if names is not None:
            files = tuple(f for f in files if f.out_name in names or Path(f.path).name in names)
        if kind not in kinds or not files:
            continue
        for pkg_name in dict.fromkeys(f.package for f in files):
            pkg = PACKAGES[pkg_name]
            lines += ["", f"{headings[kind]}: Debian package {pkg.name} {pkg.version} (upstream: {pkg.upstream}):", ""]
            lines += [f"- {f.path}" + (f" (as {f.name})" if f.name else "") + ": " + (f"(c) {f.year} " if f.year else "")
                      + f"{f.author}, {f.license}, sha256 {f.sha256}" for f in files if f.package == pkg_name]
    screens = [sc for sc in SCREENS if names is None or _screen_name(sc[0]) in names]
    if "screens" in kinds and screens:
        from hanrt_bench.docpages import notice_lines

        from .screens import screen_font_sources

        seeds = ", ".join(str(sd) for sd, _ in screens) if names is not None else \
            f"{min(sd for sd, _ in screens)}..{max(sd for sd, _ in screens)}"
        lines += ["", f"Screenshot-like images: {len(screens)} made by hanrt_export.screens (seeds "
                  f"{seeds}), ours; text rendered in fonts from",
                  "these Debian packages (package, version, licence; fonts not redistributed):", ""]
        lines += notice_lines(screen_font_sources())
    lines += [
        "",
        "CC-BY-4.0: https://creativecommons.org/licenses/by/4.0/",
        "CC-BY-3.0: https://creativecommons.org/licenses/by/3.0/",
        "CC0-1.0:   https://creativecommons.org/publicdomain/zero/1.0/",
        "public-domain: the Open Clip Art Library's Creative Commons Public Domain Dedication (in",
        "openclipart-png's copyright file: https://creativecommons.org/licenses/publicdomain/); for",
        "endless-sky-high-dpi's photos: works of NASA or the USGS, US government works (its copyright file)",
        "",
        "Held-out evaluation photos (never trained on): scikit-image's astronaut, camera, chelsea,",
        "coffee, rocket, coins, moon, brick, grass, gravel, hubble_deep_field and matplotlib's",
        "grace_hopper (CC0 / public domain).",
    ]
    return "\n".join(lines) + "\n"
