"""Real motion blur from consecutive video frames, made the way the GoPro dataset was made.

Nah et al. (2017) filmed at 240 fps and averaged N = 7–13 consecutive frames in linear light
to get a blurred frame, with the middle frame as its sharp target: real camera shake, object
motion and sensor noise, no synthetic kernel. :class:`FramesSource` does the same on the fly
from any folder of consecutive frames (``config.data.frames.path``): one sequence, or one
subfolder per sequence, frames in sorted file-name order.

* ``blur = f^-1(mean_t f(frame_t))`` over a window of ``N ~ U{lo..hi}`` frames
  (``frames.window``), ``f`` the display-to-linear curve (``frames.curve``: ``"gamma"`` with
  ``frames.gamma``, or ``"srgb"``, IEC 61966-2-1); ``sharp = frame_{start + N // 2}`` (the
  middle frame for odd N, the later of the two middle ones for even N).
* The frames of the fraction ``frames.eval_range = (a, b)`` of every sequence are held out: no
  training window touches them, and evaluation pairs are the consecutive windows of
  ``frames.eval_window`` frames inside them (at most ``frames.num_eval``), each optionally cut
  to its centre ``eval_max_size`` window.
* Training crops may be downscaled (``frames.scale_range``): a window of ``size / s`` pixels
  is averaged and both images are resized to ``size`` (Lanczos), so that one sequence's motion
  is seen at several magnitudes and content scales, as photos of other sizes would show it.
* Training crops may be jittered in light and colour (``frames.exposure_range``,
  ``frames.white_balance``): each frame's linear light is multiplied by an exposure gain and
  per-channel white-balance gains before the window is averaged and clipped at white (a sensor
  saturates per exposure), the sharp frame alike, so one sequence's light and colour vary as
  other scenes' would. Evaluation pairs are never jittered.
* Training record ``i`` draws its sequence, N and start from ``default_rng([seed, 0, i])``;
  the crop position comes from the pipeline's per-element generator. Decoded frames are kept
  in each worker (LRU, ``frames.cache_mb``): 299 frames of 1280x720 take 790 MiB.
"""

import collections
import dataclasses
import os
import threading
from typing import Any, Sequence

import numpy as np
from PIL import Image

from biskip_jax.data import image_io
from biskip_jax.errors import UserError

CURVES = ("gamma", "srgb")


def to_linear(x: np.ndarray, curve: str, gamma: float = 2.2) -> np.ndarray:
  """Display values in [0, 1] -> linear light (``x ** gamma``, or the sRGB EOTF)."""
  x = np.asarray(x, np.float32)
  if curve == "gamma":
    return x ** np.float32(gamma)
  if curve == "srgb":
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)
  raise ValueError(f"unknown curve {curve!r}: expected one of {CURVES}")


def to_display(x: np.ndarray, curve: str, gamma: float = 2.2) -> np.ndarray:
  """Linear light in [0, 1] -> display values, the inverse of :func:`to_linear`."""
  x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
  if curve == "gamma":
    return x ** np.float32(1.0 / gamma)
  if curve == "srgb":
    return np.where(x <= 0.0031308, 12.92 * x,
                    1.055 * x ** np.float32(1 / 2.4) - 0.055).astype(np.float32)
  raise ValueError(f"unknown curve {curve!r}: expected one of {CURVES}")


def list_sequences(path: str) -> list[list[str]]:
  """The frame sequences under ``path``: its own images, else each subfolder's, sorted.

  Raises:
    UserError: ``path`` is not a folder, or holds no sequence of at least 2 frames.
  """
  if not os.path.isdir(path):
    raise UserError(f"--config.data.frames.path={path!r} is not a folder of video frames.")
  own = image_io.list_images(path)
  if own:
    seqs = [[os.path.join(path, f) for f in own]]
  else:
    seqs = []
    for sub in sorted(os.listdir(path)):
      folder = os.path.join(path, sub)
      if not sub.startswith(".") and os.path.isdir(folder):
        files = image_io.list_images(folder)
        if files:
          seqs.append([os.path.join(folder, f) for f in files])
  seqs = [s for s in seqs if len(s) >= 2]
  if not seqs:
    raise UserError(f"--config.data.frames.path={path}: no sequence of consecutive frames (a "
                    "folder of images, or subfolders of images) found.")
  return seqs


@dataclasses.dataclass(frozen=True)
class Window:
  """``length`` consecutive frames of sequence ``seq`` from frame ``start``."""
  seq: int
  start: int
  length: int


def held_out(n: int, eval_range: Sequence[float]) -> tuple[int, int]:
  """Frames ``[lo, hi)`` of an ``n``-frame sequence in the fraction ``eval_range``."""
  a, b = eval_range
  return int(np.floor(a * n)), int(np.ceil(b * n))


class FramesSource:
  """Blurred/sharp pairs averaged from video frames; the interface of ``FilePairSource``.

  Args:
    sequences: frame paths per sequence (:func:`list_sequences`).
    split: ``"train"`` (windows outside ``eval_range``) or ``"eval"`` (windows inside it).
    num_examples: training records in one epoch (ignored for ``"eval"``).
    seed: data seed.
    window: ``(lo, hi)`` frames averaged per training pair, inclusive.
    odd_windows: training windows of odd lengths only, so that the sharp target, the middle
      frame, is the window's centre in time (an even window's is half a frame late).
    eval_window: frames averaged per evaluation pair.
    eval_range: ``(a, b)``, the held-out fraction of every sequence.
    num_eval: most evaluation pairs (0: all that fit).
    curve: ``"gamma"`` or ``"srgb"`` (:func:`to_linear`).
    gamma: exponent of the ``"gamma"`` curve.
    eval_max_size: > 0: evaluation pairs are their centre window of at most this size.
    cache_mb: decoded frames kept per process (MiB).
    scale_range: ``(lo, hi)`` in (0, 1]: training crops are downscaled by ``s ~ U(lo, hi)``
      (at least ``size / min(height, width)``, so that the window fits); ``(1, 1)`` draws
      nothing.
    exposure_range: ``(lo, hi)``: training crops' linear light is multiplied by
      ``g ~ U(lo, hi)``; ``(1, 1)`` draws nothing.
    white_balance: ``w >= 0``: training crops' linear channels are multiplied by
      ``exp(u_c)``, ``u_c ~ U(-w, w)`` less their mean (colour changes, brightness does not);
      0 draws nothing.
  """

  def __init__(self, sequences: Sequence[Sequence[str]], *, split: str, num_examples: int,
               seed: int, window: Sequence[int] = (7, 13), odd_windows: bool = True,
               eval_window: int = 11,
               eval_range: Sequence[float] = (0.0, 0.0), num_eval: int = 0,
               curve: str = "gamma", gamma: float = 2.2, eval_max_size: int = 0,
               cache_mb: int = 1024, scale_range: Sequence[float] = (1.0, 1.0),
               exposure_range: Sequence[float] = (1.0, 1.0), white_balance: float = 0.0):
    self.sequences = [list(s) for s in sequences]
    self.split = split
    self._seed = seed % 2**32
    self._window = (int(window[0]), int(window[1]))
    self._lengths = [n for n in range(self._window[0], self._window[1] + 1)
                     if n % 2 or not odd_windows]
    if not self._lengths:
      raise UserError(f"--config.data.frames.window={self._window}: no odd length in it; "
                      "widen it or set --config.data.frames.odd_windows=False")
    self._curve, self._gamma = curve, gamma
    self._eval_max_size = eval_max_size
    self._cache_bytes = cache_mb * 2**20
    self._scale_range = (float(scale_range[0]), float(scale_range[1]))
    self._exposure_range = (float(exposure_range[0]), float(exposure_range[1]))
    self._white_balance = float(white_balance)
    if split == "train":
      # Valid starts per sequence and length: the window must not touch the held-out frames.
      self._starts = [self._train_starts(len(s), eval_range) for s in self.sequences]
      if not any(len(v) for per_len in self._starts for v in per_len.values()):
        raise UserError(f"--config.data.frames: no training window of {self._window[0]}-"
                        f"{self._window[1]} frames fits outside eval_range={tuple(eval_range)} "
                        "in any sequence; use longer sequences or a smaller eval_range.")
      self._windows: list[Window] = []
      self.num_examples = int(num_examples)
    else:
      self._windows = []
      for j, seq in enumerate(self.sequences):
        lo, hi = held_out(len(seq), eval_range)
        self._windows += [Window(j, s, eval_window)
                          for s in range(lo, hi - eval_window + 1, eval_window)]
      if num_eval > 0 and len(self._windows) > num_eval:
        # Spread over the held-out frames rather than the first few.
        picks = np.linspace(0, len(self._windows) - 1, num_eval).round().astype(int)
        self._windows = [self._windows[p] for p in picks]
      self.num_examples = len(self._windows)
    self.__setstate__(self.__dict__)

  def __getstate__(self) -> dict[str, Any]:  # Each worker decodes its own frames.
    return {k: v for k, v in self.__dict__.items() if not k.startswith("_s_")}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._s_cache: collections.OrderedDict = collections.OrderedDict()
    self._s_bytes = 0
    self._s_lock = threading.Lock()

  def _train_starts(self, n: int, eval_range: Sequence[float]) -> dict[int, np.ndarray]:
    lo, hi = held_out(n, eval_range)
    out = {}
    for length in self._lengths:
      starts = np.arange(0, n - length + 1)
      out[length] = starts[(starts + length <= lo) | (starts >= hi)]
    return out

  def __len__(self) -> int:
    return self.num_examples

  def window(self, index: int) -> Window:
    """The frames of record ``index`` (training: drawn from the record's seed)."""
    if self.split != "train":
      return self._windows[index]
    rng = np.random.default_rng([self._seed, 0, index])
    weights = np.array([sum(len(v) for v in per_len.values()) for per_len in self._starts],
                       np.float64)
    seq = int(rng.choice(len(self.sequences), p=weights / weights.sum()))
    lengths = [n for n, v in self._starts[seq].items() if len(v)]
    length = int(lengths[rng.integers(len(lengths))])
    starts = self._starts[seq][length]
    return Window(seq, int(starts[rng.integers(len(starts))]), length)

  def name(self, index: int) -> str:
    w = self.window(index)
    seq = self.sequences[w.seq]
    folder = os.path.basename(os.path.dirname(seq[0]))
    first = os.path.splitext(os.path.basename(seq[w.start]))[0]
    last = os.path.splitext(os.path.basename(seq[w.start + w.length - 1]))[0]
    return f"{folder}_{first}-{last}.png"

  def _frame(self, seq: int, t: int) -> np.ndarray:
    key = (seq, t)
    with self._s_lock:
      if key in self._s_cache:
        self._s_cache.move_to_end(key)
        return self._s_cache[key]
    img = image_io.load_image(self.sequences[seq][t])
    with self._s_lock:
      if img.nbytes <= self._cache_bytes and key not in self._s_cache:
        self._s_cache[key] = img
        self._s_bytes += img.nbytes
        while self._s_bytes > self._cache_bytes:
          _, old = self._s_cache.popitem(last=False)
          self._s_bytes -= old.nbytes
    return img

  def frame_size(self, seq: int) -> tuple[int, int]:
    """``(height, width)`` of the frames of sequence ``seq`` (read from the first frame)."""
    size = image_io.image_size(self.sequences[seq][0])
    if size is None:
      return self._frame(seq, 0).shape[:2]
    return size

  def _average(self, w: Window, rows: slice, cols: slice,
               gains: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The window's blurred and sharp images in ``rows, cols``; ``gains``: float32[3] on the
    linear light of every frame (clipped at white per frame), or None."""
    acc = mid = None
    for t in range(w.start, w.start + w.length):
      frame = self._frame(w.seq, t)
      if acc is None:
        shape = frame.shape
      elif frame.shape != shape:
        raise UserError(f"Frame {self.sequences[w.seq][t]} is {frame.shape[1]}x"
                        f"{frame.shape[0]}, not {shape[1]}x{shape[0]} like the frames before "
                        "it: every frame of a sequence must have the same size.")
      lin = to_linear(frame[rows, cols] / np.float32(255.0), self._curve, self._gamma)
      if gains is not None:
        lin = np.minimum(lin * gains, np.float32(1.0))
      if t == w.start + w.length // 2:
        sharp, mid = frame[rows, cols], lin
      acc = lin if acc is None else acc + lin

    def to_uint8(lin):
      return (to_display(lin, self._curve, self._gamma) * 255.0).round().astype(np.uint8)

    if gains is not None:  # The middle frame's light as averaged; else the frame itself.
      sharp = to_uint8(mid)
    return to_uint8(acc / np.float32(w.length)), np.ascontiguousarray(sharp)

  def _gains(self, rng: np.random.Generator) -> np.ndarray | None:
    """A training crop's linear-light gains per channel, float32[3], or None (no jitter)."""
    if self._exposure_range == (1.0, 1.0) and not self._white_balance:
      return None
    gains = np.full(3, rng.uniform(*self._exposure_range))
    if self._white_balance:
      u = rng.uniform(-self._white_balance, self._white_balance, 3)
      gains *= np.exp(u - u.mean())
    return gains.astype(np.float32)

  def load(self, index: int) -> dict[str, Any]:
    """Pair ``index`` at full size (or its centre ``eval_max_size`` window), uint8 HxWx3."""
    w = self.window(index)
    h, wd = self.frame_size(w.seq)
    m = self._eval_max_size
    hh, ww = (min(h, m), min(wd, m)) if m else (h, wd)
    top, left = (h - hh) // 2, (wd - ww) // 2
    blur, sharp = self._average(w, slice(top, top + hh), slice(left, left + ww))
    return {"name": self.name(index), "blur": blur, "sharp": sharp}

  def random_crop(self, index: int, size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """A random ``size x size`` crop of pair ``index``, averaging only the crop's pixels.

    With ``scale_range`` other than ``(1, 1)``, the crop is a window of ``round(size / s)``
    pixels, averaged at full size and then downscaled to ``size`` (Lanczos), blurred and sharp
    alike. With ``exposure_range`` or ``white_balance`` set, its light is jittered
    (:meth:`_gains`, drawn after the crop's position).

    Returns:
      ``(blur, sharp)``, each ``uint8[size, size, 3]``, or None if the frames are smaller than
      the crop (the caller then pads the full pair).
    """
    w = self.window(index)
    h, wd = self.frame_size(w.seq)
    if h < size or wd < size:
      return None
    side = size
    if self._scale_range != (1.0, 1.0):
      scale = max(rng.uniform(*self._scale_range), size / min(h, wd))
      side = min(round(size / scale), h, wd)
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(wd - side + 1))
    pair = self._average(w, slice(top, top + side), slice(left, left + side),
                         self._gains(rng))
    if side == size:
      return pair
    return tuple(np.asarray(Image.fromarray(x).resize((size, size), Image.Resampling.LANCZOS),
                            np.uint8) for x in pair)
