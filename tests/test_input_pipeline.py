"""Tests for biskip_jax.data.input_pipeline on tiny fake datasets (all sources, train and eval)."""

import os
import warnings

import numpy as np
import pytest
from absl import flags

from biskip_jax.data import datasets, input_pipeline
from biskip_jax.errors import UserError
from configs import biskip
from tests import test_datasets as fakes

CROP = 16


def _config(source: str, path: str = "", **data):
  config = biskip.get_config()
  config.train.seed = 0
  config.train.batch_size = 4
  d = config.data
  d.source, d.path, d.crop_size, d.num_workers, d.prefetch = source, str(path), CROP, 0, 2
  d.synthetic.kernel_size = 7
  d.synthetic.num_train = 8
  d.synthetic.num_eval = 3
  for k, v in data.items():
    d[k] = v
  return config


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x["blur"], y["blur"])
    np.testing.assert_array_equal(x["sharp"], y["sharp"])


def _make_folder(root, n=6, same=False, size=(fakes.H, fakes.W)):
  for i in range(n):
    a = fakes.random_image(i, *size)
    datasets.save_image(os.path.join(root, "blur", f"im{i}.png"), a)
    datasets.save_image(os.path.join(root, "sharp", f"im{i}.png"), a if same else 255 - a)


@pytest.fixture(name="gopro_root")
def fixture_gopro_root(tmp_path):
  fakes.make_gopro(tmp_path)
  return tmp_path


def test_train_batches_shapes_and_dtypes(gopro_root):
  config = _config("gopro", gopro_root)
  assert input_pipeline.num_train_examples(config) == 5
  assert input_pipeline.per_process_batch_size(config) == 4
  batch = next(input_pipeline.create(config, "train"))
  assert set(batch) == {"blur", "sharp"}
  for v in batch.values():
    assert v.shape == (4, CROP, CROP, 3) and v.dtype == np.uint8


def test_crops_of_blur_and_sharp_are_aligned(tmp_path):
  _make_folder(tmp_path, same=True)
  config = _config("folder", tmp_path, random_flip=True)
  for batch in _take(input_pipeline.create(config, "train"), 6):
    np.testing.assert_array_equal(batch["blur"], batch["sharp"])
  # And the crops really move and flip: not all from the top-left corner.
  first = datasets.load_image(tmp_path / "blur" / "im0.png")[:CROP, :CROP]
  assert not all((b["blur"] == first).all() for b in _take(input_pipeline.create(config,
                                                                                  "train"), 3))


def test_random_transpose_gives_both_orientations_aligned(tmp_path):
  # Whole-image crops, no flips: each crop is its image or that image transposed, and the
  # sharp crop (255 - blurred) gets the same transform.
  _make_folder(tmp_path, n=4, size=(CROP, CROP))
  images = [datasets.load_image(tmp_path / "blur" / f"im{i}.png") for i in range(4)]
  config = _config("folder", tmp_path, random_flip=False, random_transpose=True)
  seen = []
  for batch in _take(input_pipeline.create(config, "train"), 8):
    np.testing.assert_array_equal(batch["sharp"], 255 - batch["blur"])
    for b in batch["blur"]:
      plain = [i for i, a in enumerate(images) if (b == a).all()]
      turned = [i for i, a in enumerate(images) if (b == a.transpose(1, 0, 2)).all()]
      assert len(plain) + len(turned) == 1
      seen.append(bool(turned))
  assert 0.25 < np.mean(seen) < 0.75  # 32 fair coin flips.
  config.data.random_transpose = False
  for batch in _take(input_pipeline.create(config, "train"), 4):
    assert all(any((b == a).all() for a in images) for b in batch["blur"])


def test_same_seed_same_batches_other_seed_different(gopro_root):
  config = _config("gopro", gopro_root)
  a = _take(input_pipeline.create(config, "train"), 4)
  _assert_same(a, _take(input_pipeline.create(config, "train"), 4))
  config.train.seed = 1
  b = _take(input_pipeline.create(config, "train"), 4)
  assert any((x["blur"] != y["blur"]).any() for x, y in zip(a, b, strict=True))


def test_epochs_are_reshuffled(tmp_path):
  _make_folder(tmp_path, n=4, same=True, size=(CROP, CROP))
  config = _config("folder", tmp_path, random_flip=False)
  config.train.batch_size = 1
  firsts = {i: datasets.load_image(tmp_path / "blur" / f"im{i}.png")[:, :8].tobytes()
            for i in range(4)}

  def order(batches):
    return [next(i for i, f in firsts.items() if f == b["blur"][0, :, :8].tobytes())
            for b in batches]
  ids = order(_take(input_pipeline.create(config, "train"), 12))
  epochs = [ids[0:4], ids[4:8], ids[8:12]]
  assert all(sorted(e) == [0, 1, 2, 3] for e in epochs)
  assert len({tuple(e) for e in epochs}) > 1


def test_resume_state_round_trip(gopro_root):
  config = _config("gopro", gopro_root)
  it = input_pipeline.create(config, "train")
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 2)
  fresh = input_pipeline.create(config, "train")
  fresh.set_state(state)
  _assert_same(expected, _take(fresh, 2))


@pytest.mark.slow
def test_worker_processes_match_in_process_and_resume(gopro_root):
  flags.FLAGS.mark_as_parsed()  # What absl.app.run does for train.py.
  config = _config("gopro", gopro_root)
  reference = _take(input_pipeline.create(config, "train"), 5)
  config.data.num_workers = 2
  it = input_pipeline.create(config, "train")
  try:
    got = _take(it, 3)
    state = it.get_state()
    got += _take(it, 2)
  finally:
    it.close()
  _assert_same(reference, got)
  it = input_pipeline.create(config, "train")
  try:
    it.set_state(state)
    _assert_same(reference[3:], _take(it, 2))
  finally:
    it.close()


def test_cache_and_crops_per_image(gopro_root):
  config = _config("gopro", gopro_root)
  plain = _take(input_pipeline.create(config, "train"), 4)
  config.data.cache_decoded = True
  _assert_same(plain, _take(input_pipeline.create(config, "train"), 4))
  config.data.crops_per_image = 2
  assert input_pipeline.num_train_examples(config) == 10
  a = _take(input_pipeline.create(config, "train"), 3)
  _assert_same(a, _take(input_pipeline.create(config, "train"), 3))


def test_small_images_error_or_pad(tmp_path):
  _make_folder(tmp_path, n=2, size=(10, 12))
  config = _config("folder", tmp_path, small_images="error")
  with pytest.raises(UserError, match=r"im0.png.*small_images=pad.*crop_size"):
    input_pipeline.create(config, "train")
  config.data.small_images = "pad"
  batch = next(input_pipeline.create(config, "train"))
  assert batch["blur"].shape == (4, CROP, CROP, 3)


def test_small_synthetic_image_error_raised_from_the_pipeline(tmp_path):
  datasets.save_image(tmp_path / "tiny.png", fakes.random_image(0, 10, 12))
  datasets.save_image(tmp_path / "held.png", fakes.random_image(1))
  config = _config("synthetic", small_images="error")
  config.data.synthetic.images = str(tmp_path)
  config.data.synthetic.holdout = ("held",)
  with pytest.raises(UserError, match=r"tiny.*small_images=pad"):
    next(input_pipeline.create(config, "train"))


def test_eval_order_and_full_resolution(gopro_root):
  config = _config("gopro", gopro_root)
  ds = input_pipeline.create(config, "test")
  examples = list(ds)
  assert [e["name"] for e in examples] == ["GOPR0384_11_00/000001.png",
                                           "GOPR0384_11_00/000002.png"] == ds.names
  for e in examples:
    assert e["blur"].shape == e["sharp"].shape == (fakes.H, fakes.W, 3)
  np.testing.assert_array_equal(examples[1]["blur"], ds[1]["blur"])
  train_as_eval = input_pipeline.create(config, "train", training=False)
  assert len(train_as_eval) == 5


def test_bad_training_image_is_skipped_with_a_warning(tmp_path):
  _make_folder(tmp_path, n=5, same=True)
  bad = tmp_path / "blur" / "im3.png"
  bad.write_bytes(bad.read_bytes()[:100])
  config = _config("folder", tmp_path)
  with pytest.warns(datasets.BadImageWarning, match=r"im3.png"):
    batches = _take(input_pipeline.create(config, "train"), 6)
  for b in batches:
    np.testing.assert_array_equal(b["blur"], b["sharp"])


def test_too_many_bad_images_raise(tmp_path):
  _make_folder(tmp_path, n=4, same=True)
  for i in range(3):
    (tmp_path / "sharp" / f"im{i}.png").write_bytes(b"")
  config = _config("folder", tmp_path, max_bad_fraction=0.5)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", datasets.BadImageWarning)
    with pytest.raises(UserError, match="max_bad_fraction"):
      _take(input_pipeline.create(config, "train"), 4)


def test_synthetic_train_and_eval():
  config = _config("synthetic")
  assert input_pipeline.num_train_examples(config) == 8
  a = _take(input_pipeline.create(config, "train"), 2)
  _assert_same(a, _take(input_pipeline.create(config, "train"), 2))
  assert a[0]["blur"].shape == (4, CROP, CROP, 3)
  assert (a[0]["blur"] != a[0]["sharp"]).any()
  ds = input_pipeline.create(config, "test")
  assert ds.names == ["coffee_0000.png", "rocket_0001.png", "coffee_0002.png"]
  assert ds[0]["blur"].shape == (400, 600, 3)


def test_synthetic_eval_pairs_follow_eval_seed_not_train_seed():
  config = _config("synthetic")
  train = _take(input_pipeline.create(config, "train"), 1)
  def pairs_of(config):
    ds = input_pipeline.create(config, "test")
    return [ds[i] for i in range(len(ds))]
  pairs = pairs_of(config)
  config.train.seed = 1
  assert (_take(input_pipeline.create(config, "train"), 1)[0]["blur"] != train[0]["blur"]).any()
  _assert_same(pairs, pairs_of(config))  # The same held-out pairs.
  config.data.synthetic.eval_seed = 1
  other = pairs_of(config)
  assert all((a["blur"] != b["blur"]).any() for a, b in zip(pairs, other, strict=True))
  np.testing.assert_array_equal(pairs[0]["sharp"], other[0]["sharp"])  # Same photos.


def test_kohler_is_eval_only(tmp_path):
  fakes.make_kohler(tmp_path)
  config = _config("kohler", tmp_path)
  with pytest.raises(UserError, match="evaluation only"):
    input_pipeline.create(config, "train")
  ds = input_pipeline.create(config, "test")
  assert len(ds) == 4 and len(next(iter(ds))["sharp_frames"]) == 3


def test_gopro_tfds_format(gopro_root, tmp_path):
  config = _config("gopro", gopro_root, gopro_format="tfds", tfds_data_dir=str(tmp_path / "t"))
  batch = next(input_pipeline.create(config, "train"))
  assert batch["blur"].shape == (4, CROP, CROP, 3)
  assert input_pipeline.create(config, "test").names == ["GOPR0384_11_00/000001.png",
                                                         "GOPR0384_11_00/000002.png"]


def test_config_errors_name_the_flag(gopro_root):
  with pytest.raises(UserError, match="--config.data.source"):
    input_pipeline.create(_config("imagenet", gopro_root), "train")
  with pytest.raises(UserError, match="--config.data.small_images"):
    input_pipeline.create(_config("gopro", gopro_root, small_images="crop"), "train")
  config = _config("gopro", gopro_root)
  config.train.batch_size = 0
  with pytest.raises(UserError, match="--config.train.batch_size"):
    input_pipeline.create(config, "train")
