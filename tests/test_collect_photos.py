"""Tests for biskip_jax.data.datasets.collect_photos on a fake extracted package (no network)."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from biskip_jax.data.datasets import collect_photos as cp
from biskip_jax.errors import UserError

PKG = "fake-wallpapers"
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake

Files: *
Copyright: 2014 Someone
License: GPL-2+

Files: photos/beach.jpg
Copyright: 2018, Ann Author
           2019, Bob Author
License: CC-BY-4.0

License: GPL-2+
 This package is free software.
"""


def _fake_tree(root) -> None:
  """An extracted package: two photos, one render in two sizes, the copyright file."""
  rng = np.random.default_rng(0)
  files = {"usr/share/backgrounds/beach.jpg": (300, 200), "usr/share/backgrounds/forest.png":
           (100, 80), "usr/share/wallpapers/Render/contents/images/1920x1080.png": (60, 40),
           "usr/share/wallpapers/Render/contents/images/3840x2160.png": (120, 80)}
  for path, (w, h) in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        os.path.join(root, path))
  doc = os.path.join(root, "usr/share/doc", PKG)
  os.makedirs(doc)
  with open(os.path.join(doc, "copyright"), "w") as f:
    f.write(COPYRIGHT)


ALLOW = {"usr/share/backgrounds/beach.jpg": "fake_beach",
         "usr/share/backgrounds/forest.png": "fake_forest"}


def test_select_photos_keeps_only_the_allow_list(tmp_path):
  _fake_tree(tmp_path)
  photos, rejected = cp.select_photos(str(tmp_path), PKG, ALLOW)
  assert [p.name for p in photos] == ["fake_beach", "fake_forest"]
  assert rejected == 1  # The render, counted once for its two sizes.
  with pytest.raises(UserError, match="missing"):
    cp.select_photos(str(tmp_path), PKG, {**ALLOW, "usr/share/backgrounds/gone.jpg": "x"})


def test_resize_long_side():
  img = Image.new("RGB", (300, 200))
  assert cp.resize_long_side(img, 150).size == (150, 100)  # 300 * 0.5, 200 * 0.5.
  assert cp.resize_long_side(img.rotate(90, expand=True), 150).size == (100, 150)
  assert cp.resize_long_side(img, 1000).size == (300, 200)  # Never enlarged.
  assert cp.resize_long_side(Image.new("L", (4, 4)), 8).mode == "RGB"
  with pytest.raises(UserError, match="max_side"):
    cp.resize_long_side(img, 0)


def test_license_for_uses_the_last_matching_stanza():
  stanzas = cp.parse_copyright(COPYRIGHT)
  assert cp.license_for("usr/share/backgrounds/beach.jpg", stanzas) == (
      "CC-BY-4.0 (2018, Ann Author; 2019, Bob Author)")
  assert cp.license_for("usr/share/backgrounds/forest.png", stanzas) == "GPL-2+ (2014 Someone)"
  assert cp.license_for("x.png", []).startswith("unknown")


def test_save_photos_and_sources_csv(tmp_path):
  root, out = tmp_path / "root", tmp_path / "out"
  out.mkdir()
  _fake_tree(root)
  photos, _ = cp.select_photos(str(root), PKG, ALLOW)
  rows = cp.save_photos(str(root), photos, str(out), version="1.0-1", max_side=150)
  cp.write_sources_csv(str(out / "SOURCES.csv"), rows)
  assert sorted(os.listdir(out)) == ["SOURCES.csv", "fake_beach.png", "fake_forest.png"]
  assert Image.open(out / "fake_beach.png").size == (150, 100)
  assert Image.open(out / "fake_forest.png").size == (100, 80)
  with open(out / "SOURCES.csv") as f:
    got = list(csv.DictReader(f))
  assert tuple(got[0]) == cp.CSV_COLUMNS
  assert got[0] == {"file": "fake_beach.png", "package": PKG, "package_version": "1.0-1",
                    "path_in_package": "usr/share/backgrounds/beach.jpg",
                    "license": "CC-BY-4.0 (2018, Ann Author; 2019, Bob Author)"}
  assert got[1]["license"] == "GPL-2+ (2014 Someone)"


def test_collect_rejects_unknown_packages(tmp_path):
  with pytest.raises(UserError, match="no allow-list"):
    cp.collect(str(tmp_path), packages=["nope"], max_side=64)
