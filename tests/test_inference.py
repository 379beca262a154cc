"""Tests for inference (any size, tiling, checkpoints), deblur.py and evaluate.py."""

import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from biskip_jax.data.datasets import load_image, save_image
from biskip_jax.errors import UserError
from biskip_jax.evaluation import metrics, shift_tolerant
from biskip_jax.inference import full_resolution
from biskip_jax.nn import models
from biskip_jax.train import train_lib
from configs import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _photo(h, w):
  return np.ascontiguousarray(skimage.data.astronaut()[100:100 + h, 120:120 + w])


@pytest.mark.slow
def test_from_checkpoint_restores_any_size(workdir):
  path, config, variables = workdir
  d = full_resolution.Deblurrer.from_checkpoint(path)
  assert d.step == 5
  for h, w in ((37, 53), (1, 5), (64, 64)):
    img = _photo(h, w)
    out = d(img)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
  img = _photo(37, 53)
  model = d.model
  ref = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, jnp.asarray(img, jnp.float32)[None] / 127.5 - 1)
  ref = np.clip(np.round((np.asarray(ref[0]) + 1) * 127.5), 0, 255).astype(np.uint8)
  # Without size buckets the image is restored at its own size (the generator's padding only).
  exact = full_resolution.Deblurrer.from_checkpoint(path, size_bucket=0)
  np.testing.assert_array_equal(exact(img), ref)
  # Running statistics are used: the result does not depend on other images.
  assert not np.array_equal(exact(img), img)
  # Compiled with conv.compiler_options: on CPU, XLA's own conv kernels, not YNNPACK's.
  compiled = d._fn.lower(d.variables, jnp.zeros((1, 8, 8, 3))).compile()  # pylint: disable=protected-access
  hlo = compiled.as_text()
  assert "__ynn_fusion" not in hlo


def test_named_checkpoint_and_errors(workdir, tmp_path):
  path, _, _ = workdir
  d = full_resolution.Deblurrer.from_checkpoint(os.path.join(path, "checkpoints", "5"))
  assert d.step == 5
  with pytest.raises(UserError, match="does not exist"):
    full_resolution.Deblurrer.from_checkpoint(str(tmp_path / "nope"))
  with pytest.raises(UserError, match="no config.json"):
    full_resolution.Deblurrer.from_checkpoint(str(tmp_path))
  empty = tmp_path / "empty"
  train_lib.save_or_check_config(tiny.get_config("SA1-BS"), str(empty))
  with pytest.raises(UserError, match="no complete checkpoint"):
    full_resolution.Deblurrer.from_checkpoint(str(empty))


@pytest.mark.slow
def test_tiled_matches_untiled_away_from_borders(workdir):
  path, _, _ = workdir
  d = full_resolution.Deblurrer.from_checkpoint(path)
  img = _photo(200, 260)
  whole = d(img, tile_size=0).astype(int)
  tiled = d(img, tile_size=128).astype(int)
  assert tiled.shape == whole.shape
  # Tile borders of a 128-pixel tiling with 32-pixel overlaps.
  interior = np.ones(img.shape[:2], bool)
  for size, axis in ((200, 0), (260, 1)):
    for start in full_resolution._tile_starts(size, 128, 32):  # pylint: disable=protected-access
      for edge in (start, start + 128):
        sl = [slice(None), slice(None)]
        sl[axis] = slice(max(edge - 8, 0), edge + 8)
        interior[tuple(sl)] = False
  diff = np.abs(whole - tiled)[interior]
  assert diff.max() <= 1, diff.max()


# Size buckets and the geometric self-ensemble ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_generator():
  """A tiny batch-norm config with random weights, and the plain generator as a reference.

  The reference maps one uint8 [H, W, 3] image to float [H, W, 3] in [-1, 1] with
  ``model.apply`` alone (no padding, buckets or ensemble).
  """
  config = tiny.get_config("1-BS")
  model = models.generator_from_config(config.model)
  # The config's PRNG ("rbg") compiles the init ~5x faster than the default.
  variables = jax.jit(model.init)(jax.random.key(0, impl=config.rng_impl),
                                  jnp.zeros((1, 32, 32, 3)))
  apply = jax.jit(lambda x: model.apply(variables, x / 127.5 - 1.0, train=False))
  return config, variables, lambda image: np.asarray(apply(np.float32(image)[None])[0])


@pytest.mark.slow
def test_size_buckets_compile_one_program_per_bucket(tiny_generator):
  config, variables, reference = tiny_generator
  sizes = ((40, 50), (50, 60), (33, 64), (64, 20), (70, 70))
  buckets = {(-(-h // 64) * 64, -(-w // 64) * 64) for h, w in sizes}
  assert len(buckets) == 2
  bucketed = full_resolution.Deblurrer(config, variables, size_bucket=64)
  exact = full_resolution.Deblurrer(config, variables, size_bucket=0)
  for h, w in sizes:
    img = _photo(h, w)
    out = bucketed(img)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    exact(img)
  assert bucketed._fn._cache_size() == len(buckets)  # pylint: disable=protected-access
  assert exact._fn._cache_size() == len(sizes)  # pylint: disable=protected-access
  # The definition, by hand: reflect-pad to the bucket, restore, crop.
  img = _photo(40, 50)
  padded = np.pad(img, ((0, 24), (0, 14), (0, 0)), mode="reflect")
  np.testing.assert_allclose(bucketed.restore_float(img), reference(padded)[:40, :50],
                             atol=1e-5)
  # A size already on the grid is restored exactly as without buckets.
  img = _photo(64, 64)
  np.testing.assert_array_equal(bucketed(img), exact(img))
  with pytest.raises(UserError, match=r"--config.eval.size_bucket=48: must be 0 or a multiple "
                                      r"of 32"):
    full_resolution.Deblurrer(config, variables, size_bucket=48)


def _ensemble_by_hand(reference, image):
  """Mean of the 8 rotations/flips of ``image`` restored and turned back (numpy's rot90)."""
  outs = []
  for flip in (False, True):
    x = np.fliplr(image) if flip else image
    for r in range(4):
      y = np.rot90(reference(np.rot90(x, r)), -r)
      outs.append(np.fliplr(y) if flip else y)
  return np.mean(outs, axis=0)


@pytest.mark.slow
@pytest.mark.parametrize("h,w,batched", [(40, 56, True), (48, 48, True), (40, 56, False)])
def test_ensemble_averages_the_eight_flips_and_transposes(tiny_generator, h, w, batched):
  config, variables, reference = tiny_generator
  img = _photo(h, w)
  d = full_resolution.Deblurrer(config, variables, ensemble=True, size_bucket=0)
  if not batched:
    d.max_pixels = 8 * h * w - 1  # 8 images do not fit: one transform at a time.
  ref = _ensemble_by_hand(reference, img)
  np.testing.assert_allclose(d.restore_float(img), ref, atol=1e-5)
  expected = np.clip(np.round((ref + 1) * 127.5), 0, 255)
  assert np.abs(d(img).astype(int) - expected).max() <= 1  # Rounded once, after the mean.
  assert (d._ensemble_fn._cache_size() == 1) == batched  # pylint: disable=protected-access
  if h != w and batched:  # With size buckets: the ensemble of the padded image, cropped.
    bucketed = full_resolution.Deblurrer(config, variables, ensemble=True, size_bucket=64)
    padded = np.pad(img, ((0, -h % 64), (0, -w % 64), (0, 0)), mode="reflect")
    np.testing.assert_allclose(bucketed.restore_float(img),
                               _ensemble_by_hand(reference, padded)[:h, :w], atol=1e-5)


@pytest.mark.slow
def test_ensemble_of_the_identity_generator_returns_the_input():
  config = tiny.get_config("1-BS")
  config.model.zero_residual = True  # Untrained: G(b) = b, invariant under every transform.
  variables = jax.jit(models.generator_from_config(config.model).init)(
      jax.random.key(1, impl=config.rng_impl), jnp.zeros((1, 32, 32, 3)))
  img = _photo(37, 53)
  d = full_resolution.Deblurrer(config, variables, ensemble=True)
  np.testing.assert_array_equal(d(img), img)
  np.testing.assert_array_equal(d(img, tile_size=32), img)  # Ensembled tiles, blended.


@pytest.mark.slow
def test_ensemble_flag_reaches_deblur_and_evaluate(workdir, tmp_path):
  from biskip_jax.evaluation import eval_lib  # pylint: disable=g-import-not-at-top
  from biskip_jax.inference import deblur_lib
  path, _, _ = workdir
  img = _photo(24, 40)
  save_image(str(tmp_path / "in" / "a.png"), img)
  assert deblur_lib.run(path, str(tmp_path / "out"), [str(tmp_path / "in")], ensemble=True) == []
  ensembled = full_resolution.Deblurrer.from_checkpoint(path, ensemble=True)(img)
  np.testing.assert_array_equal(load_image(str(tmp_path / "out" / "a.png")), ensembled)
  # evaluate.py's path: the ensemble at the image's own size (no size buckets).
  sharp = np.ascontiguousarray(img[::-1])
  save_image(str(tmp_path / "pairs" / "blur" / "a.png"), img)
  save_image(str(tmp_path / "pairs" / "sharp" / "a.png"), sharp)
  result = eval_lib.run(path, f"folder:{tmp_path / 'pairs'}", None, saliency=False,
                        ensemble=True)
  exact = full_resolution.Deblurrer.from_checkpoint(path, ensemble=True, size_bucket=0)(img)
  assert result["ensemble"] and result["psnr"] == pytest.approx(metrics.psnr(exact, sharp))


@pytest.mark.slow
def test_tile_flags_reach_deblur_and_evaluate(workdir, tmp_path):
  """Tiles of 16 with no overlap on a 32x48 image: a mosaic of six whole-image restorations."""
  from biskip_jax.evaluation import eval_lib  # pylint: disable=g-import-not-at-top
  from biskip_jax.inference import deblur_lib
  path, _, _ = workdir
  img = _photo(32, 48)

  def mosaic(whole):
    return np.block([[[whole(img[y:y + 16, x:x + 16])] for x in (0, 16, 32)] for y in (0, 16)])

  save_image(str(tmp_path / "in" / "a.png"), img)
  assert deblur_lib.run(path, str(tmp_path / "out"), [str(tmp_path / "in")], tile_size=16,
                        tile_overlap=0) == []
  # deblur.py pads each tile to its size bucket; evaluate.py restores at the tile's own size.
  np.testing.assert_array_equal(load_image(str(tmp_path / "out" / "a.png")),
                                mosaic(full_resolution.Deblurrer.from_checkpoint(path)))
  whole = full_resolution.Deblurrer.from_checkpoint(path, size_bucket=0)
  sharp = np.ascontiguousarray(img[::-1])
  save_image(str(tmp_path / "pairs" / "blur" / "a.png"), img)
  save_image(str(tmp_path / "pairs" / "sharp" / "a.png"), sharp)
  result = eval_lib.run(path, f"folder:{tmp_path / 'pairs'}", None, saliency=False,
                        tile_size=16, tile_overlap=0)
  tiled = mosaic(whole)
  assert result["tile_size"] == 16 and result["psnr"] == pytest.approx(metrics.psnr(tiled, sharp))
  assert not np.array_equal(whole(img), tiled)  # The tiles' borders show: tiling took effect.
  for flags_ in (dict(tile_size=-1), dict(tile_overlap=-2)):
    name, value = next(iter(flags_.items()))
    with pytest.raises(UserError, match=f"^--{name}={value}: expected 0"):
      eval_lib.run("no/such/run", f"folder:{tmp_path / 'pairs'}", None, **flags_)


@pytest.mark.slow
def test_levin_protocol_scores_restored_and_blurred_up_to_a_shift(workdir, tmp_path):
  from biskip_jax.evaluation import eval_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  big = np.ascontiguousarray(skimage.data.camera()[200:280, 200:280])
  sharp = np.repeat(big[8:72, 8:72, None], 3, -1)
  # A "blurred" image that is the sharp one moved by (2, -3) px, plus noise: Levin's protocol
  # forgives the move, plain PSNR does not.
  moved = big[8 - 2:72 - 2, 8 + 3:72 + 3].astype(float) + rng.normal(0, 2, (64, 64))
  blur = np.repeat(np.clip(moved.round(), 0, 255).astype(np.uint8)[..., None], 3, -1)
  examples = [dict(name="a.png", blur=blur, sharp=sharp)]
  result = eval_lib.evaluate(lambda x: x, examples, None, saliency=False, progress=False,
                             timing=False, aligned=True)
  row = result["per_image"][0]
  want = shift_tolerant.levin_scores(blur, sharp)
  assert want["shift"] == (2.0, -3.0)  # blur[i + 2, j - 3] = sharp[i, j] (+ noise).
  assert row["aligned_psnr"] == row["blurred_aligned_psnr"] == pytest.approx(want["psnr"])
  assert row["aligned_ssim"] == row["blurred_aligned_ssim"] == pytest.approx(want["ssim"])
  assert row["aligned_psnr"] > 40 > 25 > row["psnr"]
  assert result["aligned_psnr"] == pytest.approx(want["psnr"])
  # evaluate.py's --data=levin:PATH reads folder pairs and adds the aligned columns.
  save_image(str(tmp_path / "blur" / "a.png"), blur)
  save_image(str(tmp_path / "sharp" / "a.png"), sharp)
  path, _, _ = workdir
  run = eval_lib.run(path, f"levin:{tmp_path}", None, saliency=False)
  assert {"aligned_psnr", "blurred_aligned_psnr"} <= set(run["per_image"][0])
  assert run["blurred_aligned_psnr"] == pytest.approx(want["psnr"])
  assert "blurred_aligned_psnr" in eval_lib.format_table(run)
  assert "aligned_psnr" not in eval_lib.run(path, f"folder:{tmp_path}", None, saliency=False)
  with pytest.raises(UserError, match="levin:PATH"):
    eval_lib.run(path, "levin", None)
  small = [dict(name="small.png", blur=blur[:40, :40], sharp=sharp[:40, :40])]
  with pytest.raises(UserError, match="small.png: Levin's protocol: border=15 leaves no 11x11"):
    eval_lib.evaluate(lambda x: x, small, None, saliency=False, progress=False, aligned=True)


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
  assert written.pop(0) == ".deblur_outputs.jsonl"  # The names written, for later runs.
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


def _snapshot(folder):
  """``{relative path: bytes}`` of every file under ``folder``."""
  files = {}
  for root, _, names in os.walk(folder):
    for n in names:
      p = os.path.join(root, n)
      with open(p, "rb") as f:
        files[os.path.relpath(p, folder)] = f.read()
  return files


def _two_photos(tmp_path):
  """``tmp_path/photos`` with two small photos, ``a.png`` and ``b.png``."""
  photos = tmp_path / "photos"
  save_image(str(photos / "a.png"), _photo(24, 30))
  save_image(str(photos / "b.png"), _photo(20, 16))
  return photos


@pytest.mark.slow
def test_deblur_py_never_overwrites_its_inputs(workdir, tmp_path):
  path, _, _ = workdir
  photos = _two_photos(tmp_path)
  before = _snapshot(photos)
  r = _run(["deblur.py", f"--ckpt={path}", f"--out={photos}", str(photos)])
  assert r.returncode == 2, r.stderr[-3000:]
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"deblur.py: error: --out {photos}: "), lines
  assert f"{photos / 'a.png'} would overwrite that input" in lines[0], lines
  assert _snapshot(photos) == before  # Nothing overwritten, nothing added.


@pytest.mark.slow
def test_deblur_py_into_a_subfolder_of_its_input_is_idempotent(workdir, tmp_path):
  path, _, _ = workdir
  photos = _two_photos(tmp_path)
  originals = _snapshot(photos)
  out = photos / "restored"
  cmd = ["deblur.py", f"--ckpt={path}", f"--out={out}", str(photos)]
  first = _run(cmd)
  assert first.returncode == 0, first.stderr[-3000:]
  results = _snapshot(out)
  assert sorted(n for n in results if not n.startswith(".")) == ["a.png", "b.png"]
  again = _run(cmd)  # The earlier results in photos/restored are not inputs now.
  assert again.returncode == 0, again.stderr[-3000:]
  assert "2 of 2 written" in again.stderr, again.stderr[-2000:]
  record = ".deblur_outputs.jsonl"  # Gains the new results' sizes and times.
  assert {k: v for k, v in _snapshot(out).items() if k != record} == {
      k: v for k, v in results.items() if k != record}
  assert {k: v for k, v in _snapshot(photos).items()
          if not k.startswith("restored" + os.sep)} == originals


def test_deblur_inputs_skip_earlier_results_in_the_same_folder(tmp_path):
  from biskip_jax.inference import deblur_lib  # pylint: disable=g-import-not-at-top
  save_image(str(tmp_path / "a.jpg"), _photo(8, 8))
  files, _ = deblur_lib.expand_inputs([str(tmp_path)], out_dir=str(tmp_path))
  outs = deblur_lib.plan_outputs(files, str(tmp_path), "png")
  assert outs == [str(tmp_path / "a.png")]
  with deblur_lib.output_folder(str(tmp_path)).writing("a.png") as out:  # As deblur.py does.
    save_image(out, _photo(8, 8))
  # A second run over the folder takes the original only, and writes the same name again.
  assert deblur_lib.expand_inputs([str(tmp_path)], out_dir=str(tmp_path)) == (files, [])
  assert deblur_lib.expand_inputs([str(tmp_path / "*")]) == (files, [])


# One-line errors -------------------------------------------------------------------------


def _one_line(r, prog):
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), (
      r.returncode, r.stderr[-3000:])
  return lines[0]


def _chattr(flag, path):
  return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_deblur_and_evaluate_py_with_an_unwritable_out_are_one_line(workdir, tmp_path):
  path, _, _ = workdir
  photo = tmp_path / "in" / "a.png"
  save_image(str(photo), _photo(16, 16))
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  line = _one_line(_run(["deblur.py", f"--ckpt={path}", f"--out={blocker / 'out'}",
                         str(photo)]), "deblur.py")
  assert line == f"deblur.py: error: --out {blocker / 'out'}: cannot create the folder (Not a " \
                 "directory)"
  locked = tmp_path / "locked"
  locked.mkdir()
  if not _chattr("+i", locked):
    pytest.skip("chattr +i is not permitted here: no way to make a folder unwritable as root")
  try:
    line = _one_line(_run(["deblur.py", f"--ckpt={path}", f"--out={locked}", str(photo)]),
                     "deblur.py")
    assert line == f"deblur.py: error: --out {locked}: cannot write to the folder (Operation " \
                   "not permitted)"
    line = _one_line(_run(["evaluate.py", f"--ckpt={path}", "--data=synthetic",
                           "--max_images=1", f"--out={locked}"]), "evaluate.py")
    assert line == f"evaluate.py: error: --out {locked}: cannot create the folder (Operation " \
                   "not permitted)"
    assert os.listdir(locked) == []
  finally:
    _chattr("-i", locked)


def _edited_run(workdir, tmp_path, edit):
  copy = tmp_path / "run"
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(workdir, copy)
  cfg = copy / "config.json"
  cfg.write_text(edit(cfg.read_text()))
  return copy


def test_inference_with_a_bad_config_json_is_one_line(workdir, tmp_path):
  path, _, _ = workdir
  truncated = _edited_run(path, tmp_path / "a", lambda text: text[:50])
  with pytest.raises(UserError) as e:
    full_resolution.Deblurrer.from_checkpoint(str(truncated))
  msg = str(e.value)
  assert msg.startswith(f"{truncated}/config.json is not a valid config (") and "\n" not in msg
  # A config.json whose generator differs from the checkpoint's (edited by hand).
  def wider(text):
    cfg = json.loads(text)
    cfg["model"]["channels"] = [8, 8, 8, 8, 8]
    return json.dumps(cfg)
  other = _edited_run(path, tmp_path / "b", wider)
  with pytest.raises(UserError) as e:
    full_resolution.Deblurrer.from_checkpoint(str(other))
  msg = str(e.value)
  assert msg.startswith(f"no checkpoint in {other}/checkpoints can be restored (steps 5); the "
                        f"newest: the checkpoint {other}/checkpoints/5 "), msg
  assert msg.endswith("Is the run's config.json edited, or are the files damaged?") and (
      "\n" not in msg), msg


@pytest.mark.slow
def test_deblur_warns_that_only_the_first_frame_of_an_animation_is_restored(workdir, tmp_path,
                                                                              capsys):
  from biskip_jax import cli  # pylint: disable=g-import-not-at-top
  from biskip_jax.inference import deblur_lib
  path, _, _ = workdir
  frames = [Image.fromarray(_photo(16, 20)), Image.fromarray(_photo(16, 20)[::-1].copy())]
  gif = tmp_path / "anim.gif"
  frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
  tif = tmp_path / "pages.tif"
  frames[0].save(tif, save_all=True, append_images=frames[1:])
  failures = deblur_lib.run(path, str(tmp_path / "out"), [str(gif), str(tif)])
  assert failures == []
  err = capsys.readouterr().err
  for f in (gif, tif):
    assert (f"{cli.prog()}: warning: {f} holds 2 frames (an animation or a multi-page file); only "
            "the first is restored") in err, err
  assert sorted(os.listdir(tmp_path / "out")) == [".deblur_outputs.jsonl", "anim.png",
                                                  "pages.png"]
