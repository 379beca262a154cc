"""Tests for biskip_jax.data.datasets: image IO, GoPro (folder and TFDS), Köhler, folder,
synthetic."""

import io
import os
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from biskip_jax.data import blur as blur_lib
from biskip_jax.data import datasets, image_io, input_pipeline
from biskip_jax.data.datasets import folder, gopro, kohler, synthetic
from biskip_jax.errors import UserError
from configs import tiny

H, W = 48, 64


def random_image(seed: int, h: int = H, w: int = W) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_gopro(root, *, frames=(("train", "GOPR0001_00_00", 3), ("train", "GOPR0002_00_01", 2),
                                ("test", "GOPR0384_11_00", 2)), size=(H, W)) -> dict:
  """Writes a tiny GOPRO_Large tree; returns {(split, seq, kind, frame): array}."""
  arrays = {}
  for split, seq, n in frames:
    for kind_id, kind in enumerate(("blur", "blur_gamma", "sharp")):
      for f in range(1, n + 1):
        a = random_image(hash((split, seq, kind, f)) % 2**31, *size)
        a[0, 0] = kind_id  # Tells the kinds apart.
        path = os.path.join(root, split, seq, kind, f"{f:06d}.png")
        datasets.save_image(path, a)
        arrays[(split, seq, kind, f)] = a
  return arrays


# ---- Image IO ---------------------------------------------------------------------------------

def test_load_image_converts_modes_to_rgb_uint8(tmp_path):
  gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
  Image.fromarray(gray).save(tmp_path / "gray.png")
  g16 = (np.arange(H * W).reshape(H, W) * 20).astype(np.uint16)
  Image.fromarray(g16).save(tmp_path / "g16.png")
  rgba = np.dstack([random_image(0), np.full((H, W), 7, np.uint8)])
  Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
  Image.fromarray(random_image(1)).convert("P").save(tmp_path / "pal.gif")
  for name in ("gray.png", "g16.png", "rgba.png", "pal.gif"):
    img = datasets.load_image(tmp_path / name)
    assert img.dtype == np.uint8 and img.shape == (H, W, 3), name
  np.testing.assert_array_equal(datasets.load_image(tmp_path / "gray.png")[..., 1], gray)
  expected16 = np.round(g16 / 65535 * 255).astype(np.uint8)
  np.testing.assert_array_equal(datasets.load_image(tmp_path / "g16.png")[..., 0], expected16)
  np.testing.assert_array_equal(datasets.load_image(tmp_path / "rgba.png"), rgba[..., :3])


def test_save_load_round_trip(tmp_path):
  a = random_image(3)
  datasets.save_image(tmp_path / "sub" / "a.png", a)
  np.testing.assert_array_equal(datasets.load_image(tmp_path / "sub" / "a.png"), a)
  with pytest.raises(ValueError):
    datasets.save_image(tmp_path / "f.png", a.astype(np.float32))


@pytest.mark.parametrize("content", [b"", b"not an image", "truncated"])
def test_bad_images_raise_naming_the_file(tmp_path, content):
  path = tmp_path / "bad.png"
  if content == "truncated":
    datasets.save_image(path, random_image(4))
    content = path.read_bytes()[:200]
  path.write_bytes(content)
  with pytest.raises(datasets.BadImageError, match="bad.png"):
    datasets.load_image(path)
  assert issubclass(datasets.BadImageError, UserError)
  with pytest.raises(datasets.BadImageError, match="missing.png"):
    datasets.load_image(tmp_path / "missing.png")


# ---- GoPro ------------------------------------------------------------------------------------

def test_gopro_counts_pairing_and_order(tmp_path):
  arrays = make_gopro(tmp_path)
  train = gopro.list_pairs(str(tmp_path), "train")
  test = gopro.list_pairs(str(tmp_path), "test")
  assert [p.name for p in train] == [
      "GOPR0001_00_00/000001.png", "GOPR0001_00_00/000002.png", "GOPR0001_00_00/000003.png",
      "GOPR0002_00_01/000001.png", "GOPR0002_00_01/000002.png"]
  assert [p.name for p in test] == ["GOPR0384_11_00/000001.png", "GOPR0384_11_00/000002.png"]
  ex = datasets.FilePairSource(train).load(3)
  np.testing.assert_array_equal(ex["blur"], arrays[("train", "GOPR0002_00_01", "blur", 1)])
  np.testing.assert_array_equal(ex["sharp"], arrays[("train", "GOPR0002_00_01", "sharp", 1)])


def test_gopro_blur_vs_blur_gamma(tmp_path):
  make_gopro(tmp_path)
  for kind, kind_id in (("blur", 0), ("blur_gamma", 1)):
    pair = gopro.list_pairs(str(tmp_path), "test", kind)[0]
    assert f"/{kind}/" in pair.blur.replace(os.sep, "/")
    assert datasets.load_image(pair.blur)[0, 0, 0] == kind_id


def test_gopro_missing_dir_error_says_where_what_and_url(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(UserError) as e:
    gopro.list_pairs(str(missing), "train")
  msg = str(e.value)
  assert str(missing) in msg and "blur_gamma" in msg and gopro.URL in msg
  (tmp_path / "GOPRO_Large").mkdir()
  with pytest.raises(UserError, match="Did you mean"):
    gopro.list_pairs(str(tmp_path), "train")
  make_gopro(tmp_path / "g", frames=(("train", "S", 1),))
  with pytest.raises(UserError, match="no split folder .*test"):
    gopro.list_pairs(str(tmp_path / "g"), "test")


def test_gopro_missing_sharp_frame_names_it(tmp_path):
  make_gopro(tmp_path)
  os.remove(tmp_path / "train" / "GOPR0002_00_01" / "sharp" / "000002.png")
  with pytest.raises(UserError, match=r"GOPR0002_00_01.blur.000002\.png has no sharp frame"):
    gopro.list_pairs(str(tmp_path), "train")


def test_gopro_size_mismatch_names_the_file(tmp_path):
  make_gopro(tmp_path)
  bad = tmp_path / "test" / "GOPR0384_11_00" / "sharp" / "000002.png"
  datasets.save_image(bad, random_image(0, H + 2, W))
  pairs = gopro.list_pairs(str(tmp_path), "test")
  with pytest.raises(UserError, match="000002.png"):
    datasets.check_pair_sizes(pairs)
  with pytest.raises(UserError, match="Size mismatch"):
    datasets.FilePairSource(pairs).load(1)


def test_gopro_tfds_builder_round_trip(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  tfds.disable_progress_bar()
  root = tmp_path / "GOPRO_Large"
  make_gopro(root)
  builder = gopro.prepare_tfds(str(root), "blur_gamma", data_dir=str(tmp_path / "tfds"))
  files = os.listdir(builder.data_dir)
  assert any(".array_record" in f for f in files), files
  for split in ("train", "test"):
    pairs = gopro.list_pairs(str(root), split, "blur_gamma")
    source = gopro.TfdsPairSource(builder, split)
    assert len(source) == len(pairs)
    for i, p in enumerate(pairs):
      ex = source.load(i)
      assert ex["name"] == p.name
      np.testing.assert_array_equal(ex["blur"], datasets.load_image(p.blur))
      np.testing.assert_array_equal(ex["sharp"], datasets.load_image(p.sharp))
  with pytest.raises(UserError, match="no split 'val'"):
    gopro.TfdsPairSource(builder, "val")


# ---- Köhler -----------------------------------------------------------------------------------

def make_kohler(root, images=(1, 2), trajectories=(1, 2), frames=3) -> None:
  for i in images:
    for j in trajectories:
      datasets.save_image(os.path.join(root, "BlurryImages", f"Blurry{i}_{j}.png"),
                          random_image(i * j))
      for k in range(1, frames + 1):
        datasets.save_image(os.path.join(root, "GroundTruth", f"GroundTruth{i}_{j}_{k}.png"),
                            random_image(100 * i + 10 * j + k))


def test_kohler_layout_frames_and_middle_sharp(tmp_path):
  make_kohler(tmp_path)
  pairs = kohler.list_pairs(str(tmp_path))
  assert [p.name for p in pairs] == ["Blurry1_1.png", "Blurry1_2.png", "Blurry2_1.png",
                                     "Blurry2_2.png"]
  assert len(pairs[0].sharp_frames) == 3
  ex = datasets.FilePairSource(pairs).load(3)
  assert len(ex["sharp_frames"]) == 3
  np.testing.assert_array_equal(ex["sharp"], random_image(100 * 2 + 10 * 2 + 2))  # Middle, k=2.
  np.testing.assert_array_equal(ex["sharp_frames"][0], random_image(100 * 2 + 10 * 2 + 1))


def make_kohler_archives(root, *, truth_parent="", blurry_dir="", images=(1, 2),
                         trajectories=(1, 2), frames=11) -> None:
  """Writes a miniature of the benchmark's unzipped archives (8x8 PNGs).

  ``BlurryImages.zip`` gives ``Blurry{i}_{j}.png`` (in ``root/blurry_dir``) and
  ``GroundTruth_pngs_Image{i}.zip`` gives ``Image{i}/Kernel{j}/GroundTruth{i}_{j}_{k}.png`` (in
  ``root/truth_parent``, where ``{i}`` is formatted with the image number).
  """
  for i in images:
    for j in trajectories:
      datasets.save_image(os.path.join(root, blurry_dir, f"Blurry{i}_{j}.png"),
                          random_image(i * j, 8, 8))
      kernel_dir = os.path.join(root, truth_parent.format(i=i), f"Image{i}", f"Kernel{j}")
      for k in range(1, frames + 1):
        datasets.save_image(os.path.join(kernel_dir, f"GroundTruth{i}_{j}_{k}.png"),
                            random_image(1000 * i + 100 * j + k, 8, 8))


@pytest.mark.parametrize("truth_parent,blurry_dir", [
    ("", ""),  # All five archives unzipped into one folder (deepinv's Kohler does this).
    ("GroundTruth", "BlurryImages"),
    ("GroundTruth_pngs_Image{i}", "BlurryImages"),  # Unzipped into a folder per archive.
])
def test_kohler_reads_the_benchmark_archives_layout(tmp_path, truth_parent, blurry_dir):
  make_kohler_archives(tmp_path, truth_parent=truth_parent, blurry_dir=blurry_dir)
  pairs = kohler.list_pairs(str(tmp_path))
  assert [p.name for p in pairs] == ["Blurry1_1.png", "Blurry1_2.png", "Blurry2_1.png",
                                     "Blurry2_2.png"]
  p = pairs[2]  # Blurry2_1.
  assert p.blur == os.path.join(tmp_path, blurry_dir, "Blurry2_1.png")
  kernel_dir = os.path.join(tmp_path, truth_parent.format(i=2), "Image2", "Kernel1")
  # All 11 frames in order of k (10 and 11 after 9, not after 1); the middle one is k = 6.
  assert p.sharp_frames == tuple(os.path.join(kernel_dir, f"GroundTruth2_1_{k}.png")
                                 for k in range(1, 12))
  assert p.sharp == os.path.join(kernel_dir, "GroundTruth2_1_6.png")
  ex = datasets.FilePairSource(pairs).load(2)
  np.testing.assert_array_equal(ex["blur"], random_image(2, 8, 8))
  np.testing.assert_array_equal(ex["sharp"], random_image(2106, 8, 8))
  np.testing.assert_array_equal(ex["sharp_frames"][-1], random_image(2111, 8, 8))


def test_kohler_errors(tmp_path):
  archives = (r"BlurryImages\.zip, GroundTruth_pngs_Image1\.zip, .*GroundTruth_pngs_Image4\.zip "
              r"from http://people\.kyb\.tuebingen\.mpg\.de/rolfk/BenchmarkECCV2012/ unzipped "
              rf"into {re.escape(str(tmp_path))}")
  with pytest.raises(UserError, match=rf"no Blurry.*{archives}") as e:
    kohler.list_pairs(str(tmp_path))
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match=rf"is not a folder.*{archives}"):
    kohler.list_pairs(str(tmp_path / "missing"))
  make_kohler(tmp_path)
  for f in (tmp_path / "GroundTruth").glob("GroundTruth2_1_*.png"):
    f.unlink()
  with pytest.raises(UserError, match=r"Blurry2_1.png has no ground truth"):
    kohler.list_pairs(str(tmp_path))


def test_kohler_missing_archive_names_it(tmp_path):
  make_kohler_archives(tmp_path, frames=2)
  for f in (tmp_path / "Image2" / "Kernel1").iterdir():
    f.unlink()
  with pytest.raises(UserError) as e:
    kohler.list_pairs(str(tmp_path))
  assert str(e.value) == (
      f"Köhler blurred image {tmp_path / 'Blurry2_1.png'} has no ground truth: expected frames "
      f"{tmp_path / 'Image2' / 'Kernel1'}/GroundTruth2_1_{{k}}.png: download "
      f"GroundTruth_pngs_Image2.zip from {kohler.URL} and unzip it into {tmp_path}.")


# ---- Folder pairs -----------------------------------------------------------------------------

def test_folder_pairs_by_name_and_stem_and_reports_unpaired(tmp_path):
  datasets.save_image(tmp_path / "blur" / "a.png", random_image(1))
  datasets.save_image(tmp_path / "sharp" / "a.png", random_image(2))
  Image.fromarray(random_image(3)).save(tmp_path / "blur" / "x.jpg", quality=95)
  Image.fromarray(random_image(4)[..., 0]).save(tmp_path / "sharp" / "x.png")  # Grayscale partner.
  datasets.save_image(tmp_path / "blur" / "lonely.png", random_image(5))
  datasets.save_image(tmp_path / "sharp" / "orphan.png", random_image(6))
  with pytest.warns(folder.UnpairedWarning, match=r"blur/lonely.png.*sharp/orphan.png"):
    pairs = folder.list_pairs(str(tmp_path))
  assert [p.name for p in pairs] == ["a.png", "x.jpg"]
  ex = datasets.FilePairSource(pairs).load(1)
  assert ex["sharp"].shape == (H, W, 3) and ex["sharp"].dtype == np.uint8
  np.testing.assert_array_equal(ex["sharp"][..., 2], random_image(4)[..., 0])


def test_folder_errors(tmp_path):
  with pytest.raises(UserError, match=r"no blur/ subfolder"):
    folder.list_pairs(str(tmp_path))
  datasets.save_image(tmp_path / "blur" / "a.png", random_image(1))
  datasets.save_image(tmp_path / "sharp" / "b.png", random_image(1))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    with pytest.raises(UserError, match="no blurred image"):
      folder.list_pairs(str(tmp_path))


def test_folder_split_subfolders(tmp_path):
  for split in ("train", "test"):
    datasets.save_image(tmp_path / split / "blur" / f"{split}.png", random_image(1))
    datasets.save_image(tmp_path / split / "sharp" / f"{split}.png", random_image(1))
  assert [p.name for p in folder.list_pairs(str(tmp_path), "test")] == ["test.png"]


# ---- Synthetic --------------------------------------------------------------------------------

def test_skimage_photos_load_offline():
  for name in synthetic.SKIMAGE_PHOTOS:
    img = synthetic.load_skimage_photo(name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
    assert min(img.shape[:2]) >= 256, name


def test_synthetic_splits_and_determinism(tmp_path):
  train = synthetic.image_specs("skimage", ("coffee", "rocket"), "train")
  held = synthetic.image_specs("skimage", ("coffee", "rocket"), "eval")
  assert held == ["skimage:coffee", "skimage:rocket"]
  assert not set(train) & set(held)
  a = synthetic.SyntheticSource(held, num_examples=4, seed=0, split="eval", kernel_size=15)
  b = synthetic.SyntheticSource(held, num_examples=4, seed=0, split="eval", kernel_size=15)
  ea, eb = a.load(1), b.load(1)
  assert ea["name"] == "rocket_0001.png"
  np.testing.assert_array_equal(ea["blur"], eb["blur"])
  assert ea["blur"].shape == ea["sharp"].shape
  with pytest.raises(UserError, match="Unknown scikit-image photo"):
    synthetic.image_specs("skimage", ("nope",), "eval")
  datasets.save_image(tmp_path / "one.png", random_image(0))
  with pytest.raises(UserError, match="holdout"):
    synthetic.image_specs(str(tmp_path), ("coffee",), "eval")
  assert synthetic.image_specs(str(tmp_path), ("one",), "eval") == [str(tmp_path / "one.png")]


def test_synthetic_window_equals_full_blur_crop():
  src = synthetic.SyntheticSource(["skimage:camera"], num_examples=2, seed=3, split="train",
                                  kernel_size=9, noise_std=0.0)
  full = src.load(1)["blur"]
  for top, left in ((0, 0), (100, 37), (512 - 40, 512 - 30)):
    b, s = src.load_window(1, top, left, 40, 30, np.random.default_rng(0))
    np.testing.assert_array_equal(s, src.sharp(1)[top:top + 40, left:left + 30])
    assert np.abs(b.astype(int) - full[top:top + 40, left:left + 30]).max() <= 1


def _source(split="train", **kw):
  return synthetic.SyntheticSource(["skimage:camera"], num_examples=4, seed=3, split=split,
                                   kernel_size=9, **kw)


def test_synthetic_defaults_are_the_plain_blur():
  """Default settings: blur_image of the record's kernel with the [seed, 1, i, 1] noise stream."""
  src = _source("eval")
  rng = np.random.default_rng([3, 1, 2, 1])
  kernel = blur_lib.random_kernel(np.random.default_rng([3, 1, 2]), 9)
  want = blur_lib.blur_image(src.sharp(2), kernel, rng, gamma=2.2, noise_std=0.01)
  np.testing.assert_array_equal(src.load(2)["blur"], want)


def test_synthetic_crop_before_blur_equals_blur_then_crop():
  """Reference: the whole image blurred in linear light with scipy.ndimage, then cropped."""
  src = _source(noise_std=0.0)
  sharp = src.sharp(1).astype(np.float64) / 255.0
  k = src.kernel(1)
  lin = np.stack([scipy.ndimage.convolve(sharp[..., ch] ** 2.2, k, mode="reflect")
                  for ch in range(3)], axis=-1)
  ref = np.round(np.clip(lin, 0, 1) ** (1 / 2.2) * 255)
  for top, left in ((100, 37), (300, 200)):  # Interior: the boundary rule does not matter.
    b, s = src.load_window(1, top, left, 40, 30, np.random.default_rng(0))
    np.testing.assert_array_equal(s, src.sharp(1)[top:top + 40, left:left + 30])
    assert np.abs(b.astype(int) - ref[top:top + 40, left:left + 30]).max() <= 1


def test_synthetic_jpeg_probability():
  plain = _source(noise_std=0.0).load_window(0, 50, 50, 64, 64, np.random.default_rng(0))[0]
  no_jpeg = _source(noise_std=0.0, jpeg_prob=0.0, jpeg_quality=(10, 10)).load_window(
      0, 50, 50, 64, 64, np.random.default_rng(0))[0]
  jpeg = _source(noise_std=0.0, jpeg_prob=1.0, jpeg_quality=(10, 10)).load_window(
      0, 50, 50, 64, 64, np.random.default_rng(0))[0]
  np.testing.assert_array_equal(no_jpeg, plain)
  assert not np.array_equal(jpeg, plain)
  # Close to Pillow's JPEG of the plain crop (the JPEG saw the window plus its kernel margin,
  # so its 8x8 blocks are placed differently).
  buf = io.BytesIO()
  Image.fromarray(plain).save(buf, format="JPEG", quality=10)
  assert np.abs(jpeg.astype(int) - np.asarray(Image.open(buf), int)).mean() < 4


def test_synthetic_sharp_share():
  src = _source(noise_std=0.0, sharp_prob=1.0)
  b, s = src.random_crop(0, 64, np.random.default_rng(0))
  np.testing.assert_array_equal(b, s)
  noisy, s = _source(noise_std=0.05, sharp_prob=1.0).random_crop(0, 64,
                                                                  np.random.default_rng(0))
  assert 0.02 < np.std(noisy.astype(float) - s) / 255 < 0.08  # Noise only, std ~0.05.
  ev = _source("eval", noise_std=0.0, sharp_prob=1.0).load(0)  # Never for evaluation.
  assert not np.array_equal(ev["blur"], ev["sharp"])


def test_synthetic_gamma_range_lies_between_its_ends():
  """A gamma drawn from [1, 2.2]: per pixel, the blur is the power mean of order gamma of the
  pixels under the kernel, which grows with the order (the power-mean inequality)."""
  lo, hi = _source(noise_std=0.0, gamma=1.0), _source(noise_std=0.0, gamma=2.2)
  drawn = _source(noise_std=0.0, gamma=1.0, gamma_max=2.2)
  outs = []
  for i in range(6):
    (b_lo, s), (b_hi, _), (b, s2) = (src.random_crop(i, 96, np.random.default_rng(i))
                                     for src in (lo, hi, drawn))
    np.testing.assert_array_equal(s, s2)  # Same crop: the gamma is the one extra draw.
    b_lo, b_hi, b = (x.astype(int) for x in (b_lo, b_hi, b))
    assert np.all(b_lo - 1 <= b) and np.all(b <= b_hi + 1)
    if (b_hi - b_lo).mean() > 0.5:  # Where the crop has edges, the two ends differ.
      outs.append((b - b_lo).mean() / (b_hi - b_lo).mean())
  assert len(outs) >= 2
  assert 0.0 < min(outs) and max(outs) < 1.0 and np.ptp(outs) > 0.05  # Drawn per record.


def test_synthetic_noise_range_exposure_scale_and_eval_bound():
  kw = dict(noise_std=0.0, noise_std_max=0.05, exposure_range=(0.3, 0.6),
            length_range=(0.5, 1.0), scale_range=(0.5, 0.7), jpeg_prob=0.5, sharp_prob=0.3)
  a, b, c = _source(**kw), _source(**kw), _source(**{**kw, "noise_std_max": 0.0})
  for i in range(4):  # Deterministic for a seed and a crop rng.
    pa = a.random_crop(i, 48, np.random.default_rng(i))
    pb = b.random_crop(i, 48, np.random.default_rng(i))
    for x, y in zip(pa, pb):
      np.testing.assert_array_equal(x, y)
    assert pa[0].shape == pa[1].shape == (48, 48, 3)
  assert any(not np.array_equal(a.random_crop(i, 48, np.random.default_rng(i))[0],
                                c.random_crop(i, 48, np.random.default_rng(i))[0])
             for i in range(4))
  # Shorter exposure, shorter blur: the kernel's spread shrinks.
  full, part = _source(), _source(exposure_range=(0.2, 0.2))
  assert np.count_nonzero(part.kernel(0) > 1e-3) < np.count_nonzero(full.kernel(0) > 1e-3)
  # A downscaled window equals the crop of the whole image downscaled by Pillow (Lanczos).
  src = _source(noise_std=0.0, scale_range=(0.5, 0.5))
  h, w = src.scaled_size(0, 0.5)
  assert (h, w) == (256, 256)  # camera is 512x512.
  whole = np.asarray(Image.fromarray(src.sharp(0)).resize((w, h), Image.Resampling.LANCZOS))
  _, s = src.load_window(0, 100, 60, 32, 32, np.random.default_rng(0), scale=0.5)
  assert np.abs(s.astype(int) - whole[100:132, 60:92]).max() <= 1
  ev = _source("eval", eval_max_size=200).load(0)
  assert ev["blur"].shape == ev["sharp"].shape == (200, 200, 3)
  np.testing.assert_array_equal(ev["sharp"], _source("eval").sharp(0)[156:356, 156:356])
  config = tiny.get_config()  # The source's settings are checked where it is made.
  config.data.synthetic.jpeg_prob = 2.0
  with pytest.raises(UserError, match=r"--config.data.synthetic.jpeg_prob=2.0: must be"):
    input_pipeline.get_source(config, config.data.train_split)


def test_synthetic_min_shake_reaches_the_records_kernels():
  """config.data.synthetic.min_shake draws each record's anxiety from [min_shake, max_shake]:
  with both tiny, every record's shake is a straight path (middle sample on the chord)."""
  config = tiny.get_config()
  config.data.synthetic.update(max_shake=1e-7, min_shake=1e-8, kernel_size=31)
  src = input_pipeline.get_source(config, config.data.train_split)
  config.data.synthetic.min_shake = 0.0
  default = input_pipeline.get_source(config, config.data.train_split)
  for i in range(4):
    x = src._trajectory(i)  # pylint: disable=protected-access
    assert abs(x[len(x) // 2] - (x[0] + x[-1]) / 2) < 1e-3 * abs(x[-1] - x[0])
    assert not np.array_equal(x, default._trajectory(i))  # pylint: disable=protected-access


def test_image_io_lists_images_and_converts_to_the_model_range(tmp_path):
  for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt", "sub/c.tga"):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  assert image_io.list_images(str(tmp_path)) == ["a.JPG", "b.png"]
  assert image_io.list_images(str(tmp_path), recursive=True) == ["a.JPG", "b.png", "sub/c.tga"]
  u8 = np.array([0, 1, 127, 128, 254, 255], np.uint8)
  x = image_io.to_model_range(u8)
  assert x.dtype == np.float32 and x[0] == -1.0 and x[-1] == 1.0
  np.testing.assert_array_equal(image_io.from_model_range(x), u8)
  np.testing.assert_array_equal(image_io.from_model_range(np.array([-2.0, 3.0])), [0, 255])
  xj = image_io.to_model_range(jnp.asarray(u8))  # JAX arrays stay JAX arrays.
  assert isinstance(xj, jax.Array)
  np.testing.assert_array_equal(np.asarray(image_io.from_model_range(xj)), u8)
  assert datasets.load_image is image_io.load_image  # The old import path still works.


def test_synthetic_roll_share_rolls_training_blur_only():
  """roll_prob draws nothing without max_roll; at 1 the same crops get other blur; the
  evaluation pairs stay uniform blur."""
  plain, no_span = _source(noise_std=0.0), _source(noise_std=0.0, roll_prob=1.0)
  rolled = _source(noise_std=0.0, roll_prob=1.0, max_roll=30.0)
  for i in range(3):
    b, s = plain.random_crop(i, 96, np.random.default_rng(i))
    b0, s0 = no_span.random_crop(i, 96, np.random.default_rng(i))
    b1, s1 = rolled.random_crop(i, 96, np.random.default_rng(i))
    np.testing.assert_array_equal(b0, b)
    np.testing.assert_array_equal(s1, s)  # Same crop: only the blur changed.
    assert not np.array_equal(b1, b)
  ev = _source("eval", noise_std=0.0, roll_prob=1.0, max_roll=30.0).load(0)
  np.testing.assert_array_equal(ev["blur"], _source("eval", noise_std=0.0).load(0)["blur"])
