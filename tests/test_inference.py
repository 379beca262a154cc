"""Tests for inference (any size, tiling, checkpoints), deblur.py and evaluate.py."""

import csv
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from biskip_jax import inference, metrics, train_lib
from biskip_jax.datasets import load_image, save_image
from biskip_jax.errors import UserError
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _photo(h, w):
  return np.ascontiguousarray(skimage.data.astronaut()[100:100 + h, 120:120 + w])


@pytest.mark.slow
def test_from_checkpoint_restores_any_size(workdir):
  path, config, variables = workdir
  d = inference.Deblurrer.from_checkpoint(path)
  assert d.step == 5
  for h, w in ((37, 53), (1, 5), (64, 64)):
    img = _photo(h, w)
    out = d(img)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
  img = _photo(37, 53)
  model = d.model
  ref = model.apply(variables, jnp.asarray(img, jnp.float32)[None] / 127.5 - 1, train=False)
  ref = np.clip(np.round((np.asarray(ref[0]) + 1) * 127.5), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(d(img), ref)
  # Running statistics are used: the result does not depend on other images.
  assert not np.array_equal(d(img), img)
  # Compiled with conv.compiler_options: on CPU, XLA's own conv kernels, not YNNPACK's.
  compiled = d._fn.lower(d.variables, jnp.zeros((1, 8, 8, 3))).compile()  # pylint: disable=protected-access
  hlo = compiled.as_text()
  assert "__ynn_fusion" not in hlo


def test_named_checkpoint_and_errors(workdir, tmp_path):
  path, _, _ = workdir
  d = inference.Deblurrer.from_checkpoint(os.path.join(path, "checkpoints", "5"))
  assert d.step == 5
  with pytest.raises(UserError, match="does not exist"):
    inference.Deblurrer.from_checkpoint(str(tmp_path / "nope"))
  with pytest.raises(UserError, match="no config.json"):
    inference.Deblurrer.from_checkpoint(str(tmp_path))
  empty = tmp_path / "empty"
  train_lib.save_or_check_config(tiny_config(), str(empty))
  with pytest.raises(UserError, match="no complete checkpoint"):
    inference.Deblurrer.from_checkpoint(str(empty))


@pytest.mark.slow
def test_tiled_matches_untiled_away_from_borders(workdir):
  path, _, _ = workdir
  d = inference.Deblurrer.from_checkpoint(path)
  img = _photo(200, 260)
  whole = d(img, tile_size=0).astype(int)
  tiled = d(img, tile_size=128).astype(int)
  assert tiled.shape == whole.shape
  # Tile borders of a 128-pixel tiling with 32-pixel overlaps.
  interior = np.ones(img.shape[:2], bool)
  for size, axis in ((200, 0), (260, 1)):
    for start in inference._tile_starts(size, 128, 32):  # pylint: disable=protected-access
      for edge in (start, start + 128):
        sl = [slice(None), slice(None)]
        sl[axis] = slice(max(edge - 8, 0), edge + 8)
        interior[tuple(sl)] = False
  diff = np.abs(whole - tiled)[interior]
  assert diff.max() <= 1, diff.max()


def _write_inputs(folder):
  os.makedirs(folder)
  rgb = _photo(40, 50)
  save_image(os.path.join(folder, "rgb.png"), rgb)
  save_image(os.path.join(folder, "photo.jpg"), rgb)
  Image.fromarray(rgb[..., 0]).save(os.path.join(folder, "gray.png"))
  Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(
      os.path.join(folder, "rgba.png"))
  Image.fromarray(rgb).convert("P").save(os.path.join(folder, "palette.png"))
  Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(
      os.path.join(folder, "deep16.png"))
  open(os.path.join(folder, "empty.png"), "wb").close()
  with open(os.path.join(folder, "notes.png"), "w") as f:
    f.write("not an image")
  with open(os.path.join(folder, "rgb.png"), "rb") as f:
    data = f.read()
  with open(os.path.join(folder, "truncated.png"), "wb") as f:
    f.write(data[: len(data) // 2])


def _run(args):
  return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.slow
def test_deblur_py_processes_good_files_and_names_bad_ones(workdir, tmp_path):
  path, _, _ = workdir
  _write_inputs(tmp_path / "in")
  out = tmp_path / "out"
  r = _run(["deblur.py", f"--ckpt={path}", f"--out={out}", str(tmp_path / "in"),
            str(tmp_path / "missing*.png")])
  assert r.returncode == 1, r.stderr[-3000:]
  assert "Traceback" not in r.stderr
  for bad in ("empty.png", "notes.png", "truncated.png", "missing*.png"):
    assert bad in r.stderr, (bad, r.stderr[-2000:])
  written = sorted(os.listdir(out))
  assert written == ["deep16.png", "gray.png", "palette.png", "photo.png", "rgb.png",
                     "rgba.png"]
  for name in written:
    img = np.asarray(Image.open(out / name))
    assert img.shape == (40, 50, 3) and img.dtype == np.uint8


@pytest.mark.slow
def test_deblur_py_bad_checkpoint_is_one_line(tmp_path):
  save_image(str(tmp_path / "a.png"), _photo(8, 8))
  r = _run(["deblur.py", f"--ckpt={tmp_path / 'nope'}", f"--out={tmp_path}",
            str(tmp_path / "a.png")])
  assert r.returncode == 2 and "Traceback" not in r.stderr and "nope" in r.stderr


@pytest.mark.slow
def test_evaluate_py_on_a_folder(workdir, tmp_path):
  path, _, _ = workdir
  data = tmp_path / "pairs"
  for i, (y, x) in enumerate(((0, 0), (60, 90))):
    sharp = _photo(48, 64) if i == 0 else np.ascontiguousarray(
        skimage.data.chelsea()[y:y + 48, x:x + 64])
    blur = np.clip(sharp.astype(int) + 12, 0, 255).astype(np.uint8)
    save_image(str(data / "sharp" / f"im{i}.png"), sharp)
    save_image(str(data / "blur" / f"im{i}.png"), blur)
  out = tmp_path / "eval"
  r = _run(["evaluate.py", f"--ckpt={path}", f"--data=folder:{data}", f"--out={out}"])
  assert r.returncode == 0, r.stderr[-3000:]
  assert "mean" in r.stdout and "psnr" in r.stdout
  with open(out / "metrics.json") as f:
    result = json.load(f)
  for key in ("psnr", "ssim", "blurred_psnr", "blurred_ssim", "seconds_per_image",
              "saliency_similarity", "per_image"):
    assert key in result, key
  assert len(result["per_image"]) == 2 and result["seconds_per_image"] > 0
  with open(out / "per_image.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["name"] for r in rows] == ["im0.png", "im1.png"]
  # Metrics are those of the restored images exactly as written.
  for row in result["per_image"]:
    stem = os.path.splitext(row["name"])[0]
    restored = load_image(str(out / "restored" / f"{stem}.png"))
    sharp = load_image(str(data / "sharp" / row["name"]))
    assert row["psnr"] == pytest.approx(metrics.psnr(restored, sharp), abs=1e-9)
    assert row["blurred_psnr"] == pytest.approx(
        metrics.psnr(load_image(str(data / "blur" / row["name"])), sharp), abs=1e-9)
  assert os.listdir(out / "figures") and os.listdir(out / "saliency")
  fig = load_image(str(out / "figures" / "im0.png"))
  assert fig.shape == (48, 64 * 3, 3)


@pytest.mark.slow
def test_evaluate_py_rejects_unknown_data(workdir):
  path, _, _ = workdir
  r = _run(["evaluate.py", f"--ckpt={path}", "--data=imagenet"])
  assert r.returncode == 2 and "--data='imagenet'" in r.stderr and "Traceback" not in r.stderr
