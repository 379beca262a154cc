"""Tests for real blur from video frames (datasets.frames), mixtures (datasets.mixing) and the
realistic synthetic degradations (blur.boost_highlights, blur.add_sensor_noise)."""

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from biskip_jax.data import blur, input_pipeline
from biskip_jax.data.datasets import frames, mixing, save_image, synthetic
from biskip_jax.errors import UserError
from biskip_jax.evaluation import eval_lib
from configs import tiny


def _srgb_to_linear(v: float) -> float:
  """IEC 61966-2-1's decoding function, written out from the standard."""
  return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def test_curves_match_the_standards_and_invert():
  x = np.linspace(0.0, 1.0, 101, dtype=np.float32)
  want = np.array([_srgb_to_linear(float(v)) for v in x])
  np.testing.assert_allclose(frames.to_linear(x, "srgb"), want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(frames.to_linear(x, "gamma", 2.2), x.astype(np.float64) ** 2.2,
                             rtol=1e-5, atol=1e-7)
  for curve in frames.CURVES:
    np.testing.assert_allclose(frames.to_display(frames.to_linear(x, curve), curve), x,
                               atol=2e-6)
  with pytest.raises(ValueError, match="unknown curve"):
    frames.to_linear(x, "log")


def _write_sequence(folder, n=20, h=40, w=48, seed=0):
  """A textured scene translating 1 px right per frame (frame t = scene[:, t:t + w])."""
  rng = np.random.default_rng(seed)
  scene = rng.integers(0, 256, (h, w + n, 3), dtype=np.uint8)
  os.makedirs(folder, exist_ok=True)
  for t in range(n):
    save_image(os.path.join(folder, f"{t:06d}.png"), scene[:, t:t + w])
  return scene


def _linear_mean(stack, gamma=2.2):
  lin = (np.asarray(stack, np.float64) / 255.0) ** gamma
  return (np.clip(lin.mean(axis=0), 0, 1) ** (1 / gamma) * 255).round()


def test_frames_pair_is_the_linear_mean_of_its_window_against_the_middle_frame(tmp_path):
  _write_sequence(tmp_path / "seq")
  seqs = frames.list_sequences(str(tmp_path / "seq"))
  assert len(seqs) == 1 and len(seqs[0]) == 20
  src = frames.FramesSource(seqs, split="train", num_examples=50, seed=1, window=(3, 5),
                            eval_range=(0.75, 1.0))
  stack = [frames.image_io.load_image(p) for p in seqs[0]]
  for i in range(10):
    w = src.window(i)
    assert 3 <= w.length <= 5 and w.start + w.length <= 15  # Frames 15-19 are held out.
    b, s = src.random_crop(i, 16, np.random.default_rng(i))
    # Find the crop in the full pair: the sharp crop is the middle frame's.
    mid = stack[w.start + w.length // 2]
    full = _linear_mean(stack[w.start:w.start + w.length])
    hits = [(y, x) for y in range(40 - 15) for x in range(48 - 15)
            if np.array_equal(mid[y:y + 16, x:x + 16], s)]
    assert hits
    y, x = hits[0]
    np.testing.assert_allclose(b, full[y:y + 16, x:x + 16], atol=1)
  # The same record gives the same window in any process.
  again = frames.FramesSource(seqs, split="train", num_examples=50, seed=1, window=(3, 5),
                              eval_range=(0.75, 1.0))
  assert [again.window(i) for i in range(20)] == [src.window(i) for i in range(20)]


def test_downscaled_frames_crop_is_a_lanczos_resize_of_a_larger_window(tmp_path):
  _write_sequence(tmp_path / "seq")
  seqs = frames.list_sequences(str(tmp_path / "seq"))
  src = frames.FramesSource(seqs, split="train", num_examples=50, seed=1, window=(3, 5),
                            eval_range=(0.75, 1.0), scale_range=(0.5, 0.5))
  stack = [frames.image_io.load_image(p) for p in seqs[0]]

  def lanczos(x):  # Pillow's resize, the reference (an independent library call).
    return np.asarray(Image.fromarray(np.asarray(x, np.uint8)).resize((8, 8), Image.LANCZOS))

  for i in range(4):
    w = src.window(i)
    b, s = src.random_crop(i, 8, np.random.default_rng(i))
    assert b.shape == s.shape == (8, 8, 3) and b.dtype == s.dtype == np.uint8
    # A 16x16 window (8 / 0.5) of the middle frame, downscaled, and the same window of the
    # window's linear mean, downscaled.
    mid = stack[w.start + w.length // 2]
    full = _linear_mean(stack[w.start:w.start + w.length])
    hits = [(y, x) for y in range(40 - 15) for x in range(48 - 15)
            if np.array_equal(lanczos(mid[y:y + 16, x:x + 16]), s)]
    assert hits
    y, x = hits[0]
    np.testing.assert_allclose(b, lanczos(full[y:y + 16, x:x + 16]), atol=1)
  # A scale too small for the frames is raised to fit: 40 rows hold a window of 40 at most.
  small = frames.FramesSource(seqs, split="train", num_examples=50, seed=1, window=(3, 5),
                              eval_range=(0.75, 1.0), scale_range=(0.1, 0.1))
  b, s = small.random_crop(0, 20, np.random.default_rng(0))
  assert b.shape == s.shape == (20, 20, 3)


def _jittered(stack, gains, gamma=2.2):
  """Reference: each frame's linear light times ``gains``, clipped at 1, then averaged."""
  lin = np.clip((np.asarray(stack, np.float64) / 255.0) ** gamma * gains, 0, 1)
  return (lin.mean(axis=0) ** (1 / gamma) * 255).round()


def test_exposure_jitter_scales_every_frame_before_the_average_and_clips_at_white(tmp_path):
  _write_sequence(tmp_path / "seq")
  seqs = frames.list_sequences(str(tmp_path / "seq"))
  kw = dict(split="train", num_examples=50, seed=1, window=(3, 5), eval_range=(0.75, 1.0))
  plain = frames.FramesSource(seqs, **kw)
  bright = frames.FramesSource(seqs, exposure_range=(1.8, 1.8), **kw)
  stack = [frames.image_io.load_image(p) for p in seqs[0]]
  clipped = 0
  for i in range(6):
    w = bright.window(i)
    assert w == plain.window(i)
    # The gains are drawn after the crop's position: the plain crop finds it.
    _, s0 = plain.random_crop(i, 16, np.random.default_rng(i))
    b, s = bright.random_crop(i, 16, np.random.default_rng(i))
    mid = stack[w.start + w.length // 2]
    y, x = [(y, x) for y in range(40 - 15) for x in range(48 - 15)
            if np.array_equal(mid[y:y + 16, x:x + 16], s0)][0]
    win = [f[y:y + 16, x:x + 16] for f in stack[w.start:w.start + w.length]]
    np.testing.assert_allclose(s, _jittered(win[w.length // 2:w.length // 2 + 1], 1.8), atol=1)
    np.testing.assert_allclose(b, _jittered(win, 1.8), atol=1)
    clipped += int((s == 255).sum())
  assert clipped  # Gain 1.8 saturates the scene's brightest pixels: the clip was exercised.
  # Scaling the mean instead (clipping once, after it) gives brighter streaks than a sensor.
  assert not np.allclose(b, (np.clip(((np.asarray(win, np.float64) / 255) ** 2.2).mean(0)
                                     * 1.8, 0, 1) ** (1 / 2.2) * 255).round(), atol=1)


def test_white_balance_jitter_changes_colour_not_brightness(tmp_path):
  _write_sequence(tmp_path / "seq")
  seqs = frames.list_sequences(str(tmp_path / "seq"))
  kw = dict(split="train", num_examples=50, seed=1, window=(1, 1), eval_range=(0.75, 1.0))
  plain = frames.FramesSource(seqs, **kw)
  tinted = frames.FramesSource(seqs, white_balance=0.3, **kw)
  spread = []
  for i in range(8):
    _, s0 = plain.random_crop(i, 24, np.random.default_rng(i))
    b, s = tinted.random_crop(i, 24, np.random.default_rng(i))
    np.testing.assert_array_equal(b, s)  # A window of one frame: input and target alike.
    lin0 = (s0 / 255.0) ** 2.2
    lin = (s / 255.0) ** 2.2
    ok = (lin0 > 0.05) & (lin0 < 0.4)  # Not clipped, not lost in rounding.
    g = np.array([np.median(lin[..., c][ok[..., c]] / lin0[..., c][ok[..., c]])
                  for c in range(3)])
    # Per-channel gains exp(u_c - mean u), u_c in [-w, w]: their product is 1, and each
    # |u_c - mean u| is at most (2/3) * 2w (the other two channels at the other end).
    assert abs(np.log(g).sum()) < 0.03
    assert np.all(np.abs(np.log(g)) <= 4 / 3 * 0.3 + 0.01)
    spread.append(np.log(g).max() - np.log(g).min())
  assert max(spread) > 0.1  # The channels were tinted, not all left alone.
  # Evaluation pairs are never jittered.
  ev_kw = dict(split="eval", num_examples=0, seed=0, eval_window=3, eval_range=(0.75, 1.0))
  np.testing.assert_array_equal(
      frames.FramesSource(seqs, white_balance=0.3, exposure_range=(2, 2), **ev_kw).load(0)["blur"],
      frames.FramesSource(seqs, **ev_kw).load(0)["blur"])


def test_frames_evaluation_windows_lie_in_the_held_out_range(tmp_path):
  _write_sequence(tmp_path / "a" / "s1", n=30)
  _write_sequence(tmp_path / "a" / "s2", n=30, seed=1)
  seqs = frames.list_sequences(str(tmp_path / "a"))
  assert len(seqs) == 2
  ev = frames.FramesSource(seqs, split="eval", num_examples=0, seed=0, eval_window=3,
                           eval_range=(0.5, 0.8))
  lo, hi = frames.held_out(30, (0.5, 0.8))
  assert (lo, hi) == (15, 24)
  assert len(ev) == 2 * 3  # Windows 15-17, 18-20, 21-23 of each sequence.
  for i in range(len(ev)):
    w = ev.window(i)
    assert lo <= w.start and w.start + w.length <= hi
  ex = ev.load(0)
  stack = [frames.image_io.load_image(p) for p in seqs[0][15:18]]
  np.testing.assert_allclose(ex["blur"], _linear_mean(stack), atol=1)
  np.testing.assert_array_equal(ex["sharp"], stack[1])
  assert ex["name"] == "s1_000015-000017.png"
  # num_eval spreads a few windows over the held-out frames.
  few = frames.FramesSource(seqs, split="eval", num_examples=0, seed=0, eval_window=3,
                            eval_range=(0.5, 0.8), num_eval=2)
  assert [few.window(i) for i in range(2)] == [ev.window(0), ev.window(5)]
  # Training never touches the held-out frames.
  tr = frames.FramesSource(seqs, split="train", num_examples=200, seed=0, window=(2, 6),
                           eval_range=(0.5, 0.8))
  for i in range(200):
    w = tr.window(i)
    assert w.start + w.length <= lo or w.start >= hi


def test_frames_errors_name_the_folder(tmp_path):
  with pytest.raises(UserError, match="not a folder"):
    frames.list_sequences(str(tmp_path / "none"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no sequence"):
    frames.list_sequences(str(tmp_path / "empty"))
  _write_sequence(tmp_path / "short", n=6)
  with pytest.raises(UserError, match="no training window"):
    frames.FramesSource(frames.list_sequences(str(tmp_path / "short")), split="train",
                        num_examples=4, seed=0, window=(5, 7), eval_range=(0.5, 1.0))


class _Tagged:
  """A source whose records say which source they came from."""

  def __init__(self, tag, n):
    self.tag, self.n = tag, n

  def __len__(self):
    return self.n

  def name(self, i):
    return f"{self.tag}{i}"

  def load(self, i):
    return {"name": self.name(i), "blur": None, "sharp": None}


def test_mixture_holds_each_source_in_its_proportion():
  mix = mixing.MixtureSource([_Tagged("a", 7), _Tagged("b", 1000)], [0.3, 0.7])
  assert len(mix) == 1007
  tags = np.array([mix.name(i)[0] for i in range(20_000)])
  # Any run of consecutive records, and therefore any shuffled epoch of them.
  for lo in (0, 1234, 10_000):
    share = np.mean(tags[lo:lo + 1000] == "a")
    assert abs(share - 0.3) <= 0.005
  assert {mix.pick(i)[1] for i in range(20_000) if mix.pick(i)[0] == 0} == set(range(7))
  with pytest.raises(ValueError):
    mixing.MixtureSource([_Tagged("a", 1)], [0.0])
  cat = mixing.ConcatSource([_Tagged("a", 2), _Tagged("b", 0), _Tagged("c", 3)])
  assert [cat.name(i) for i in range(len(cat))] == ["a0", "a1", "c0", "c1", "c2"]


def _mix_config(tmp_path):
  _write_sequence(tmp_path / "frames", n=24, h=48, w=56)
  photos = tmp_path / "photos"
  photos.mkdir(exist_ok=True)
  rng = np.random.default_rng(0)
  for k in range(3):
    save_image(photos / f"p{k}.png", rng.integers(0, 256, (60, 70, 3), dtype=np.uint8))
  config = tiny.get_config()
  d = config.data
  d.source = "mix"
  d.mix.frames, d.mix.synthetic = 0.5, 0.5
  d.frames.path = str(tmp_path / "frames")
  d.frames.window = (3, 5)
  d.frames.eval_window = 3
  d.frames.eval_range = (0.75, 1.0)
  d.frames.num_train = 16
  d.synthetic.images = str(photos)
  d.synthetic.holdout = ("p0",)
  d.synthetic.num_train = 16
  d.synthetic.num_eval = 1
  d.synthetic.kernel_size = 5
  return config


def test_mix_config_trains_on_both_and_evaluates_on_both(tmp_path):
  config = _mix_config(tmp_path)
  train = input_pipeline.get_source(config, config.data.train_split, training=True)
  assert isinstance(train, mixing.MixtureSource) and len(train) == 32
  it = input_pipeline.create(config, config.data.train_split)
  batch = next(it)
  assert batch["blur"].shape == (2, 32, 32, 3) and batch["sharp"].dtype == np.uint8
  ev = input_pipeline.create(config, config.data.eval_split, training=False)
  names = ev.names
  assert names[0] == "p0_0000.png" and names[1:] == ["frames_000018-000020.png",
                                                    "frames_000021-000023.png"]
  # evaluate.py --data=frames[:PATH] and --data=mix point at the same pairs.
  frames_only = eval_lib.dataset_config(config, f"frames:{tmp_path / 'frames'}", None)
  assert frames_only.data.source == "frames"
  assert input_pipeline.create(frames_only, "test", training=False).names == names[1:]
  assert eval_lib.dataset_config(config, "mix", None).data.source == "mix"


def test_mix_without_synthetic_evaluation_pairs_evaluates_on_the_frames(tmp_path):
  config = _mix_config(tmp_path)
  config.data.synthetic.num_eval = 0  # config_checks allows 0: the photos stay held out.
  ev = input_pipeline.create(config, config.data.eval_split, training=False)
  assert ev.names == ["frames_000018-000020.png", "frames_000021-000023.png"]
  config.data.source = "synthetic"  # Alone, it has nothing to evaluate: one clear line.
  with pytest.raises(UserError, match="--config.data.source=synthetic: no evaluation images"):
    eval_lib.examples_of(config)


def test_mix_and_frames_settings_are_checked(tmp_path):
  config = _mix_config(tmp_path)
  config.data.mix.frames = config.data.mix.synthetic = 0.0
  with pytest.raises(UserError, match="data.mix"):
    input_pipeline.get_source(config, "train", training=True)
  config = _mix_config(tmp_path)
  config.data.frames.curve = "log"
  with pytest.raises(UserError, match="data.frames.curve"):
    input_pipeline.get_source(config, "train", training=True)
  config = _mix_config(tmp_path)
  config.data.frames.window = (5, 3)
  with pytest.raises(UserError, match="data.frames.window"):
    input_pipeline.get_source(config, "train", training=True)
  for bad in [(0.0, 1.0), (0.5, 1.5), (0.9, 0.6)]:
    config = _mix_config(tmp_path)
    config.data.frames.scale_range = bad
    with pytest.raises(UserError, match="data.frames.scale_range"):
      input_pipeline.get_source(config, "train", training=True)
  for field, bad in [("exposure_range", (0.0, 1.0)), ("exposure_range", (1.5, 0.5)),
                     ("white_balance", -0.1)]:
    config = _mix_config(tmp_path)
    config.data.frames[field] = bad
    with pytest.raises(UserError, match=f"data.frames.{field}"):
      input_pipeline.get_source(config, "train", training=True)


def test_highlights_smear_into_saturated_streaks():
  img = np.zeros((9, 31, 3), np.uint8)
  img[4, 15] = 255  # One clipped light.
  kernel = np.zeros((9, 9))
  kernel[4, :] = 1 / 9  # Horizontal motion over 9 px.
  rng = np.random.default_rng(0)
  plain = blur.blur_image(img, kernel, rng, noise_std=0.0)
  # Linear 1/9 back through the display curve: a grey streak.
  want = round((1 / 9) ** (1 / 2.2) * 255)
  np.testing.assert_array_equal(plain[4, 11:20, 0], want)
  bright = blur.blur_image(img, kernel, rng, noise_std=0.0, highlight_gain=9.0)
  np.testing.assert_array_equal(bright[4, 11:20], 255)  # Radiance x9 / 9, clipped at white.
  np.testing.assert_array_equal(bright[4, :11], 0)
  # Below the highlight level nothing changes.
  mid = np.full((5, 5, 3), blur.HIGHLIGHT_LEVEL, np.uint8)
  np.testing.assert_array_equal(
      blur.blur_image(mid, np.ones((1, 1)), rng, noise_std=0.0, highlight_gain=4.0), mid)


def test_sensor_noise_variance_is_shot_times_signal_plus_read_squared():
  rng = np.random.default_rng(0)
  for x, shot, read in ((0.2, 0.004, 0.0), (0.05, 0.0, 0.01), (0.5, 0.002, 0.003)):
    lin = np.full((200, 200, 3), x, np.float32)
    noisy = blur.add_sensor_noise(lin, rng, shot, read)
    want = shot * x + read**2
    assert abs(noisy.var() / want - 1) < 0.03
    assert abs(noisy.mean() - x) < 0.002


def test_synthetic_source_draws_the_realistic_degradations_only_when_set():
  kw = dict(num_examples=4, seed=3, split="train", kernel_size=9, noise_std=0.0)
  base = synthetic.SyntheticSource(["skimage:camera"], **kw)
  same = synthetic.SyntheticSource(["skimage:camera"], **kw, highlight_prob=0.0,
                                   shot_noise=(0.0, 0.0), read_noise=(0.0, 0.0))
  a = base.load_window(1, 10, 10, 32, 32, np.random.default_rng(5))[0]
  np.testing.assert_array_equal(a, same.load_window(1, 10, 10, 32, 32,
                                                    np.random.default_rng(5))[0])
  noisy = synthetic.SyntheticSource(["skimage:camera"], **kw, shot_noise=(0.01, 0.01))
  b = noisy.load_window(1, 10, 10, 32, 32, np.random.default_rng(5))[0]
  diff = b.astype(float) - a
  assert 1.0 < diff.std() < 20.0  # Noise, around the same blurred image.


def test_holdout_every_and_subfolders(tmp_path):
  rng = np.random.default_rng(0)
  for sub in ("a", "b"):
    for k in range(5):
      save_image(tmp_path / sub / f"{sub}{k}.png", rng.integers(0, 256, (8, 8, 3), np.uint8))
  train = synthetic.image_specs(str(tmp_path), (), "train", holdout_every=4)
  held = synthetic.image_specs(str(tmp_path), (), "eval", holdout_every=4)
  names = [os.path.basename(p) for p in held]
  assert names == ["a0.png", "a4.png", "b3.png"]  # Sorted list indices 0, 4, 8.
  assert len(train) == 7 and not set(train) & set(held)


def test_blur_extents_measure_known_motion(tmp_path):
  from experiments import blur_extents
  _write_sequence(tmp_path / "seq", n=20, h=128, w=128)
  seq = frames.list_sequences(str(tmp_path / "seq"))[0]
  ext = blur_extents.real_extents(seq, (5, 5), (0.9, 1.0), n=3, patch=64, seed=0)
  np.testing.assert_allclose(ext, 5.0)  # 4 px between first and last frame, + 1.
  half = blur_extents.real_extents(seq, (5, 5), (0.9, 1.0), n=3, patch=64, seed=0,
                                   scale_range=(0.5, 0.5))
  np.testing.assert_allclose(half, 3.0)  # Downscaled by 2: 2 px, + 1.
  sy = ml_collections.ConfigDict(dict(kernel_size=15, max_shake=0.005, length_range=(1.0, 1.0),
                                      exposure_range=(1.0, 1.0)))
  syn = blur_extents.synthetic_extents(sy, 20, 0)
  assert syn.max() <= 15 and syn.min() >= 2
  line = np.zeros((15, 15))
  line[7, 2:13] = 1
  assert blur.kernel_extent(line / line.sum()) == 11


def test_bends_of_straight_and_turning_paths(tmp_path):
  """The bend (middle sample against the chord's midpoint, over the chord) is 0 for a camera
  moving straight at constant speed and 1/2 for a right-angle turn halfway (by the formula:
  first -> middle (2, 0), first -> last (2, 2): |(2, 0) - (1, 1)| / |(2, 2)| = 1/2)."""
  from experiments import blur_extents
  _write_sequence(tmp_path / "straight", n=20, h=128, w=128)
  rng = np.random.default_rng(0)
  scene = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
  for t in range(20):  # Steps of 1 px: two right, two down, two right, ...
    dx = sum(1 for k in range(t) if (k // 2) % 2 == 0)
    save_image(tmp_path / "turn" / f"{t:06d}.png", scene[t - dx:t - dx + 128, dx:dx + 128])
  straight, turn = (frames.list_sequences(str(tmp_path / name))[0] for name in ("straight", "turn"))
  np.testing.assert_allclose(
      blur_extents.real_bends(straight, (9, 9), (0.9, 1.0), n=3, patch=64, seed=0, min_chord=2),
      0.0, atol=0.05)
  windows_from_even_starts = []
  for seed in range(6):  # Windows of 5 frames: a turn halfway only where the start is even.
    b = blur_extents.real_bends(turn, (5, 5), (0.9, 1.0), n=1, patch=64, seed=seed, min_chord=2)
    windows_from_even_starts += list(b[np.abs(b - 0.5) < 0.05])
  assert windows_from_even_starts
  assert blur_extents.bend(0j, 2 + 0j, 2 + 2j) == 0.5
  sy = ml_collections.ConfigDict(dict(kernel_size=31, max_shake=1e-7, min_shake=1e-8,
                                      length_range=(1.0, 1.0), exposure_range=(1.0, 1.0)))
  np.testing.assert_allclose(blur_extents.synthetic_bends(sy, 5, 0, 6.0), 0.0, atol=1e-3)
  sy.update(max_shake=0.005, min_shake=0.0)
  assert np.median(blur_extents.synthetic_bends(sy, 200, 0, 6.0)) > 0.1


def test_rolled_extents_vary_over_the_crop_within_the_cap():
  """No roll: the 5 points of a crop share one extent, at most the kernel's side. A roll
  moves no point of the crop by more than half the kernel side (random_roll's cap), so no
  extent exceeds the kernel's side plus that, and across the crop the extents differ."""
  from experiments import blur_extents
  sy = ml_collections.ConfigDict(dict(kernel_size=15, max_shake=0.005, length_range=(0.2, 1.0),
                                      exposure_range=(1.0, 1.0), max_roll=0.0))
  flat = blur_extents.rolled_extents(sy, 20, 0).reshape(20, 5)
  assert (flat == flat[:, :1]).all() and flat.max() <= 15
  sy.max_roll = 30.0
  rolled = blur_extents.rolled_extents(sy, 20, 0).reshape(20, 5)
  assert rolled.max() <= 15 + 7 + 1  # + 1: bilinear splatting reaches a pixel further.
  assert (rolled.max(1) > rolled.min(1)).sum() >= 10


def test_odd_windows_only_centre_the_target_in_time(tmp_path):
  _write_sequence(tmp_path / "seq")
  seqs = frames.list_sequences(str(tmp_path / "seq"))
  odd = frames.FramesSource(seqs, split="train", num_examples=200, seed=3, window=(2, 7))
  assert {odd.window(i).length for i in range(200)} == {3, 5, 7}
  for i in range(20):  # The middle frame has as many frames before it as after it.
    w = odd.window(i)
    mid = w.start + w.length // 2
    assert mid - w.start == w.start + w.length - 1 - mid
  every = frames.FramesSource(seqs, split="train", num_examples=200, seed=3, window=(2, 7),
                              odd_windows=False)
  assert {every.window(i).length for i in range(200)} == {2, 3, 4, 5, 6, 7}
  with pytest.raises(UserError, match="odd_windows"):
    frames.FramesSource(seqs, split="train", num_examples=10, seed=0, window=(4, 4))
