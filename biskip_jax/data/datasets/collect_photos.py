"""Collects real sharp photographs from Debian wallpaper packages (pretraining data).

Usage:
  python -m biskip_jax.data.datasets.collect_photos --out=data/photos

Downloads each package of :data:`ALLOW_LIST` with ``apt-get download`` (no root needed, only the
Debian archive), extracts it with ``dpkg-deb -x`` into a temporary folder, keeps only the files
the allow-list names, resizes them to a long side of at most ``--max_side`` (Lanczos) and saves
them as ``OUT/<name>.png``. ``OUT/SOURCES.csv`` records each file's package, version, path in
the package and license (from the package's DEP-5 ``/usr/share/doc/<pkg>/copyright``).

The allow-list was chosen by looking at contact sheets of every wallpaper of these packages
(Debian 12): only genuine photographs are kept; renders, paintings, vector art, gradients, a
photo with deliberate motion blur (MATE ``Storm``) and composites are not. Reviewed and
rejected entirely (no photographs): ``gnome-backgrounds`` 43 (renders), ``ukui-wallpapers``
(vector art), ``desktop-base`` (Debian theme art), ``lomiri-wallpapers``, ``sway-backgrounds``,
``xfdesktop4-data`` (gradients and logos).
"""

import csv
import dataclasses
import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
from typing import Iterable, Mapping, Sequence

from absl import app, flags
from PIL import Image

from biskip_jax import cli
from biskip_jax.errors import UserError

# Package -> {path inside the package: output file stem}. Stems are unique across packages so
# that configs can hold photos out by name (``data.synthetic.holdout``).
ALLOW_LIST: dict[str, dict[str, str]] = {
    "mate-backgrounds": {
        f"usr/share/backgrounds/mate/nature/{n}.jpg": f"mate_{n}"
        for n in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
                  "RainDrops", "TwoWings", "Wood", "YellowFlower")
    },
    "lomiri-wallpapers-16.04": {
        f"usr/share/backgrounds/{n}.jpg": "lomiri_" + n.split("_by_")[0]
        for n in ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
                  "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede",
                  "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
                  "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
                  "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
                  "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")
    },
    "lomiri-wallpapers-20.04": {
        "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg": "lomiri_Kleiber",
    },
    "plasma-workspace-wallpapers": {
        f"usr/share/wallpapers/{n}/contents/images/{r}.jpg": f"plasma_{n}"
        for n, r in (("BytheWater", "2560x1440"), ("ColdRipple", "2560x1440"),
                     ("ColorfulCups", "2560x1600"), ("DarkestHour", "2560x1440"),
                     ("EveningGlow", "2560x1440"), ("FallenLeaf", "2560x1440"),
                     ("Grey", "2560x1440"), ("Kite", "2560x1440"), ("OneStandsOut", "2560x1440"),
                     ("Path", "2560x1440"), ("summer_1am", "2560x1440"))
    },
}
# Where wallpaper packages keep their images (only used to count what was rejected).
IMAGE_DIRS = ("usr/share/backgrounds", "usr/share/wallpapers")
# Wallpaper files counted as images of a package (not image_io.IMAGE_EXTENSIONS: what
# wallpaper packages ship).
WALLPAPER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CSV_COLUMNS = ("file", "package", "package_version", "path_in_package", "license")

_OUT = flags.DEFINE_string("out", None, "Folder for the PNGs and SOURCES.csv (created).")
_MAX_SIDE = flags.DEFINE_integer("max_side", 1280, "Long side of the saved photos (at most).")
_PACKAGES = flags.DEFINE_list("packages", sorted(ALLOW_LIST), "Packages to collect from.")
_DEBS = flags.DEFINE_string("debs", "", "Folder of already downloaded .debs to use instead of "
                            "apt-get download (offline reruns); missing ones are downloaded.")


@dataclasses.dataclass(frozen=True)
class Photo:
  """One kept photo: where it came from and where it goes."""
  package: str
  path_in_package: str
  name: str  # Output stem; the file is ``<name>.png``.


def select_photos(root: str, package: str, allow: Mapping[str, str]) -> tuple[list[Photo], int]:
  """Allow-listed photos present in an extracted package.

  Args:
    root: folder the package was extracted into (``dpkg-deb -x DEB root``).
    package: package name.
    allow: ``{path inside the package: output stem}``.

  Returns:
    ``(photos, num_rejected)``: the allow-listed files found, sorted by path, and how many other
    images the package has under :data:`IMAGE_DIRS` (one per wallpaper: sizes of the same
    wallpaper, ``.../contents/images/WxH.jpg``, and ``screenshot`` previews are not counted).

  Raises:
    UserError: an allow-listed file is missing (another package version?).
  """
  missing = [p for p in allow if not os.path.isfile(os.path.join(root, p))]
  if missing:
    raise UserError(f"{package}: allow-listed files missing from the package (another version?): "
                    f"{', '.join(missing[:3])}")
  images = set()
  for d in IMAGE_DIRS:
    for dirpath, _, files in os.walk(os.path.join(root, d)):
      images.update(os.path.relpath(os.path.join(dirpath, f), root) for f in files
                    if f.lower().endswith(WALLPAPER_EXTENSIONS))
  photos = [Photo(package, p, allow[p]) for p in sorted(allow)]
  return photos, len({_wallpaper(p) for p in images} - {_wallpaper(p) for p in allow})


def _wallpaper(path: str) -> str:
  """Key of a wallpaper: its path without the ``WxH`` size (screenshots count as their set)."""
  path = re.sub(r"/screenshot\.\w+$", "/images/", path)
  return re.sub(r"_?\d+x\d+(_\w+)?(\.\w+)?$", "", path)


def resize_long_side(image: Image.Image, max_side: int) -> Image.Image:
  """RGB copy of ``image`` whose long side is at most ``max_side`` (Lanczos; never enlarged)."""
  if max_side < 1:
    raise UserError(f"--max_side must be >= 1, got {max_side}.")
  image = image.convert("RGB")
  w, h = image.size
  scale = max_side / max(w, h)
  if scale >= 1:
    return image
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return image.resize(size, Image.Resampling.LANCZOS)


def parse_copyright(text: str) -> list[dict[str, str]]:
  """Stanzas of a DEP-5 ``copyright`` file as ``{field: value}`` (continuations joined)."""
  stanzas, cur, key = [], {}, None
  for line in text.splitlines() + [""]:
    if not line.strip():
      if cur:
        stanzas.append(cur)
      cur, key = {}, None
    elif line[0] in " \t" and key:
      cur[key] += "\n" + line.strip()
    elif ":" in line:
      key, value = line.split(":", 1)
      key = key.strip().lower()
      cur[key] = value.strip()
  return stanzas


def _matches(path: str, pattern: str) -> bool:
  """DEP-5 ``Files:`` pattern against an installed path (source trees differ from /usr)."""
  if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, "*/" + pattern):
    return True
  base = os.path.basename(pattern)  # "16.04/x.jpg" is installed as usr/share/backgrounds/x.jpg.
  return not any(c in base for c in "*?[") and os.path.basename(path) == base


def license_for(path: str, stanzas: Sequence[Mapping[str, str]]) -> str:
  """One-line license summary of ``path``: ``"LICENSE (copyright holders)"``.

  The last ``Files:`` stanza matching the path wins (DEP-5 rule).
  """
  found = None
  for s in stanzas:
    if "files" in s and any(_matches(path, p) for p in s["files"].split()):
      found = s
  if found is None:
    return "unknown (no matching Files: stanza)"
  lic = found.get("license", "unknown").split("\n", 1)[0]
  holders = "; ".join(found.get("copyright", "").split("\n"))
  return f"{lic} ({holders})" if holders else lic


def write_sources_csv(path: str, rows: Iterable[Mapping[str, str]]) -> None:
  """Writes ``SOURCES.csv`` with :data:`CSV_COLUMNS`, one row per saved photo."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
    w.writeheader()
    for r in rows:
      w.writerow({k: r[k] for k in CSV_COLUMNS})


def save_photos(root: str, photos: Sequence[Photo], out: str, *, version: str,
                max_side: int) -> list[dict[str, str]]:
  """Resizes and saves ``photos`` from extracted ``root`` into ``out``; returns CSV rows."""
  stanzas = []
  for package in sorted({p.package for p in photos}):
    c = os.path.join(root, "usr/share/doc", package, "copyright")
    if os.path.isfile(c):
      with open(c, encoding="utf-8", errors="replace") as f:
        stanzas += parse_copyright(f.read())
  rows = []
  for p in photos:
    with Image.open(os.path.join(root, p.path_in_package)) as im:
      resize_long_side(im, max_side).save(os.path.join(out, p.name + ".png"))
    rows.append({"file": p.name + ".png", "package": p.package, "package_version": version,
                 "path_in_package": p.path_in_package,
                 "license": license_for(p.path_in_package, stanzas)})
  return rows


def _run(cmd: Sequence[str], cwd: str | None = None) -> str:
  if shutil.which(cmd[0]) is None:
    raise UserError(f"{cmd[0]} not found: this script needs a Debian-based system.")
  r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
  if r.returncode:
    last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
    raise UserError(f"`{' '.join(cmd)}` failed: {last}")
  return r.stdout


def fetch_deb(package: str, dest: str, debs: str = "") -> str:
  """Path of ``package``'s .deb: from ``debs`` if there, else ``apt-get download`` into dest."""
  for folder in (debs, dest):
    if folder and os.path.isdir(folder):
      found = sorted(f for f in os.listdir(folder)
                     if f.startswith(package + "_") and f.endswith(".deb"))
      if found:
        return os.path.join(folder, found[-1])
  _run(["apt-get", "download", package], cwd=dest)
  return fetch_deb(package, dest)


def collect(out: str, *, packages: Sequence[str], max_side: int, debs: str = "") -> dict:
  """Downloads, filters, resizes and records the photos; returns ``{package: (kept, rejected)}``.
  """
  unknown = sorted(set(packages) - set(ALLOW_LIST))
  if unknown:
    raise UserError(f"--packages: no allow-list for {unknown}; choose from {sorted(ALLOW_LIST)}.")
  os.makedirs(out, exist_ok=True)
  rows, counts = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for pkg in packages:
      deb = fetch_deb(pkg, tmp, debs)
      version = _run(["dpkg-deb", "-f", deb, "Version"]).strip()
      root = os.path.join(tmp, pkg)
      _run(["dpkg-deb", "-x", deb, root])
      photos, rejected = select_photos(root, pkg, ALLOW_LIST[pkg])
      rows += save_photos(root, photos, out, version=version, max_side=max_side)
      counts[pkg] = (len(photos), rejected)
      print(f"{pkg} {version}: kept {len(photos)}, rejected {rejected}", flush=True)
      shutil.rmtree(root)
  write_sources_csv(os.path.join(out, "SOURCES.csv"), rows)
  return counts


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  counts = collect(_OUT.value, packages=_PACKAGES.value, max_side=_MAX_SIDE.value,
                   debs=_DEBS.value)
  print(f"{sum(k for k, _ in counts.values())} photos in {_OUT.value}")


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  cli.run(main)
