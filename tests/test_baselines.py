"""Tests for the classical baselines (evaluate.py --ckpt=unsharp)."""

import numpy as np
from PIL import Image, ImageFilter
from skimage.metrics import peak_signal_noise_ratio

from biskip_jax.data.datasets import save_image
from biskip_jax.evaluation import baselines, eval_lib


def _photo(seed=0, shape=(40, 52, 3)):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (shape[0] // 4, shape[1] // 4, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(base).resize(shape[1::-1], Image.Resampling.BICUBIC))


def test_unsharp_mask_adds_the_scaled_detail():
  x = _photo()
  blurred = np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(2)), np.float64)
  want = np.clip(x + 1.5 * (x - blurred), 0, 255)
  got = baselines.unsharp_mask(x)
  assert got.dtype == np.uint8 and got.shape == x.shape
  assert np.abs(got - want).max() <= 1.0 + 1e-9


def test_evaluate_scores_the_unsharp_baseline(tmp_path):
  for k in range(2):
    sharp = _photo(k)
    blur = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(1.5)))
    save_image(tmp_path / "blur" / f"p{k}.png", blur)
    save_image(tmp_path / "sharp" / f"p{k}.png", sharp)
  result = eval_lib.run("unsharp", f"folder:{tmp_path}", None, saliency=False)
  rows = {r["name"]: r for r in result["per_image"]}
  for k in range(2):
    sharp = _photo(k)
    blur = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(1.5)))
    want = peak_signal_noise_ratio(sharp, baselines.unsharp_mask(blur))
    row = rows[f"p{k}.png"] if f"p{k}.png" in rows else rows[f"p{k}"]
    np.testing.assert_allclose(row["psnr"], want, rtol=1e-6)
    np.testing.assert_allclose(row["blurred_psnr"], peak_signal_noise_ratio(sharp, blur),
                               rtol=1e-6)
  assert result["checkpoint"] == "unsharp"


def test_sharp_as_input_scores_the_sharp_image_given_back(tmp_path):
  for k in range(3):
    sharp = _photo(k)
    save_image(tmp_path / "blur" / f"p{k}.png",
               np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(1.5))))
    save_image(tmp_path / "sharp" / f"p{k}.png", sharp)
  result = eval_lib.run("unsharp", f"folder:{tmp_path}", None, saliency=False,
                        sharp_input=True)
  want = {f"p{k}": peak_signal_noise_ratio(_photo(k), baselines.unsharp_mask(_photo(k)))
          for k in range(3)}
  got = {r["name"].removesuffix(".png"): r["psnr"] for r in result["per_image"]}
  assert got.keys() == want.keys()
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
  assert not any("blurred_psnr" in r for r in result["per_image"])  # Input == target.
  worst = min(want, key=want.get)
  np.testing.assert_allclose(result["psnr_min"], want[worst], rtol=1e-6)
  assert result["psnr_min_image"].removesuffix(".png") == worst
  assert result["sharp_as_input"] is True
  assert f"{want[worst]:.2f} dB" in eval_lib.format_table(result).splitlines()[-1]
