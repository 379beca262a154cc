"""Synthetic camera-shake blur (DESIGN §7): random trajectories -> kernels -> blurred images.

Follows Boracchi & Foi, "Modeling the performance of image restoration from motion blur"
(IEEE TIP 2012), as DeblurGAN's ``motion_blur`` generator implements it:

1. :func:`random_trajectory`: a 2-D random walk of ``num_steps`` samples at constant speed,
   with inertia (the velocity changes by small increments), Gaussian "anxiety" shake, a
   centripetal pull towards the start and rare impulsive jumps (abrupt ~180 degree turns).
2. :func:`trajectory_to_kernel`: the samples are centred on the kernel (by their centroid, so
   that blurring does not shift the image), shrunk if they do not fit, and splatted into the
   grid with sub-pixel bilinear weights; the kernel is non-negative and sums to 1.
3. :func:`blur_image`: convolution in linear light (``x ** gamma``) with reflect boundaries,
   back to display values (``** (1 / gamma)``), plus Gaussian noise, rounded to ``uint8``;
   optionally with clipped highlights brightened before the blur (light streaks) and shot and
   read noise in linear light after it (:func:`boost_highlights`, :func:`add_sensor_noise`).
4. Optionally (:func:`jpeg_compress`) the blurred image goes through JPEG, as camera and web
   images do.

A kernel blurs every pixel alike: the camera only translated. A hand also rolls the camera
about its optical axis, and the blur then varies over the image (Whyte et al., "Non-uniform
deblurring for shaken images", IJCV 2012; Köhler et al.'s recorded trajectories): around the
axis a pixel barely moves, far from it the roll adds a streak across the radius.
:func:`roll_angles` draws a roll in step with the trajectory's samples and
:func:`rolling_kernels` splits the motion into a few chunks of nearly constant roll, each a
rotation followed by its part of the translation kernel; :func:`blur_image` sums them.

Differences from DeblurGAN, deliberately: the kernel is centred by its centroid, not its
bounding box (a bounding-box centre shifts blurred against sharp images); the trajectory is
scaled to fit instead of being clipped at the border; its path length is drawn per kernel
(``length_range``); a random exposure fraction (DeblurGAN's) is optional (``exposure_range``).
Every random number
comes from the ``np.random.Generator`` passed in: the same seed gives the same kernel.
"""

import io

import numpy as np
import scipy.ndimage
import scipy.signal
from PIL import Image


def random_trajectory(rng: np.random.Generator, *, num_steps: int = 2000, length: float = 60.0,
                      anxiety: float = 0.005) -> np.ndarray:
  """Samples a camera-shake trajectory (Boracchi & Foi 2012).

  Args:
    rng: source of randomness.
    num_steps: number of samples along the trajectory.
    length: total path length in pixels (the speed is constant).
    anxiety: shake intensity: scales the Gaussian velocity noise and the jump probability.

  Returns:
    ``complex128[num_steps]``: positions ``x + 1j * y`` in pixels, starting at 0.
  """
  centripetal = 0.7 * rng.uniform()  # Pull back towards the start.
  prob_big_shake = 0.2 * rng.uniform()  # Probability (times anxiety) of an impulsive jump.
  gaussian_shake = 10.0 * rng.uniform()  # Weight of the random velocity component.
  angle = 2.0 * np.pi * rng.uniform()
  n = num_steps - 1
  jumps = rng.uniform(size=n) < prob_big_shake * anxiety
  jump_turn = np.exp(1j * (np.pi + rng.uniform(-0.5, 0.5, size=n)))
  noise = rng.standard_normal(n) + 1j * rng.standard_normal(n)
  step = length / n
  v = complex(np.exp(1j * angle)) * step
  x = np.zeros(num_steps, np.complex128)
  pos = 0j
  for t in range(n):  # Sequential by nature (inertia); ~2 ms for 2000 steps.
    dv = anxiety * (gaussian_shake * complex(noise[t]) - centripetal * pos) * step
    if jumps[t]:
      dv += 2.0 * v * complex(jump_turn[t])
    v += dv
    v *= step / max(abs(v), 1e-12)
    pos += v
    x[t + 1] = pos
  return x


def trajectory_to_kernel(trajectory: np.ndarray, size: int) -> np.ndarray:
  """Rasterises a trajectory into a ``size x size`` blur kernel by bilinear splatting.

  Args:
    trajectory: ``complex[T]`` positions (``x + 1j * y``) in pixels; each sample gets equal
      weight (uniform exposure).
    size: kernel side; the centroid of the trajectory lands on pixel ``(size - 1) / 2``.

  Returns:
    ``float64[size, size]``, non-negative, summing to 1 (rows are y, columns x).
  """
  kernel = _splat(fit_to_kernel(trajectory, size), size)
  return kernel / kernel.sum()


def fit_to_kernel(trajectory: np.ndarray, size: int) -> np.ndarray:
  """Kernel-grid positions of a trajectory, ``complex[T]``: centroid on the centre pixel
  ``(size - 1) / 2``, shrunk to fit."""
  if size < 1:
    raise ValueError(f"Kernel size must be >= 1, got {size}.")
  c = (size - 1) / 2.0
  p = trajectory - trajectory.mean()
  extent = max(np.abs(p.real).max(), np.abs(p.imag).max(), 1e-12)
  return p * min(1.0, (c - 1e-6) / extent) + complex(c, c) if size > 1 else p * 0


def _splat(p: np.ndarray, size: int) -> np.ndarray:
  """``float64[size, size]``: each grid position of ``p`` splatted with bilinear weights 1."""
  xs, ys = p.real, p.imag
  x0 = np.clip(np.floor(xs), 0, max(size - 2, 0)).astype(np.int64)
  y0 = np.clip(np.floor(ys), 0, max(size - 2, 0)).astype(np.int64)
  dx, dy = np.clip(xs - x0, 0, 1), np.clip(ys - y0, 0, 1)
  kernel = np.zeros((size + 1, size + 1), np.float64)
  for oy, ox, w in ((0, 0, (1 - dy) * (1 - dx)), (0, 1, (1 - dy) * dx), (1, 0, dy * (1 - dx)),
                    (1, 1, dy * dx)):
    np.add.at(kernel, (y0 + oy, x0 + ox), w)
  return kernel[:size, :size]


def random_kernel(rng: np.random.Generator, size: int = 31, *, max_anxiety: float = 0.005,
                  length_range: tuple[float, float] = (0.15, 1.0),
                  exposure_range: tuple[float, float] = (1.0, 1.0),
                  num_steps: int = 2000, min_anxiety: float = 0.0) -> np.ndarray:
  """Samples a camera-shake blur kernel.

  Args:
    rng: source of randomness; the same generator state gives the same kernel.
    size: kernel side in pixels.
    max_anxiety: upper bound of the trajectory's anxiety; each kernel draws
      ``anxiety ~ U(0.1, 1) * max_anxiety`` (DeblurGAN draws from 0.003-0.01 with 64 px kernels).
    length_range: the path length is ``U(*length_range) * (size - 1)`` pixels before fitting.
    exposure_range: the shutter is open for the first ``U(*exposure_range)`` fraction of the
      trajectory (DeblurGAN's exposure; its length shrinks with it). ``(1, 1)`` integrates all
      of it and draws no random number (kernels stay those of earlier versions).
    num_steps: trajectory samples.
    min_anxiety: > 0: the anxiety is drawn log-uniformly from ``[min_anxiety, max_anxiety]``
      instead: more nearly straight paths, as the motion of a video camera over one frame
      time is (``experiments.blur_extents`` compares the paths' bends); the same number of
      random draws.

  Returns:
    ``float64[size, size]``, non-negative, summing to 1.
  """
  return trajectory_to_kernel(random_shake(rng, size, max_anxiety=max_anxiety,
                                           length_range=length_range,
                                           exposure_range=exposure_range,
                                           num_steps=num_steps, min_anxiety=min_anxiety), size)


def random_shake(rng: np.random.Generator, size: int = 31, *, max_anxiety: float = 0.005,
                 length_range: tuple[float, float] = (0.15, 1.0),
                 exposure_range: tuple[float, float] = (1.0, 1.0),
                 num_steps: int = 2000, min_anxiety: float = 0.0) -> np.ndarray:
  """The trajectory behind :func:`random_kernel` (same arguments, same random draws):
  ``complex128[T]`` positions in pixels, cut to the exposure, before fitting the kernel."""
  if min_anxiety > 0:
    if min_anxiety > max_anxiety:
      raise ValueError(f"min_anxiety {min_anxiety} must not exceed max_anxiety {max_anxiety}.")
    anxiety = float(np.exp(rng.uniform(np.log(min_anxiety), np.log(max_anxiety))))
  else:
    anxiety = rng.uniform(0.1, 1.0) * max_anxiety
  length = rng.uniform(*length_range) * max(size - 1, 1)
  traj = random_trajectory(rng, num_steps=num_steps, length=length, anxiety=anxiety)
  if tuple(exposure_range) != (1.0, 1.0):
    lo, hi = exposure_range
    if not 0.0 < lo <= hi <= 1.0:
      raise ValueError(f"exposure_range must satisfy 0 < lo <= hi <= 1, got {exposure_range}.")
    traj = traj[:max(2, round(rng.uniform(lo, hi) * num_steps))]
  return traj


def roll_angles(rng: np.random.Generator, num: int, span: float) -> np.ndarray:
  """A smooth random roll of the camera, one angle per trajectory sample.

  The angular velocity is a random walk (the hand's roll has inertia, as the trajectory's
  velocity does), integrated, centred on its mean (so the blurred image stays aligned with
  the sharp one) and scaled to a peak-to-peak ``span``.

  Args:
    rng: source of randomness.
    num: samples (the trajectory's length).
    span: peak-to-peak roll in radians.

  Returns:
    ``float64[num]``, mean 0, ``max - min == span`` (all 0 when ``span`` or ``num < 2``).
  """
  # Plus a constant turn rate, small against the walk over a trajectory's 2000 samples.
  velocity = np.cumsum(rng.standard_normal(num)) + 3.0 * rng.standard_normal()
  angle = np.cumsum(velocity)
  angle -= angle.mean()
  peak = np.ptp(angle)
  return angle * (span / peak) if peak > 0 and span > 0 else np.zeros(num)


def random_roll(rng: np.random.Generator, num: int, *, max_roll: float, kernel_size: int,
                size: tuple[int, int], origin: tuple[int, int],
                photo: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
  """Draws a camera roll for a window of a photo: its axis and its angles.

  The axis (the optical axis) is drawn uniformly over the photo; the span from
  U(0, ``max_roll``), capped so that the roll moves no pixel of the window by more than half
  ``kernel_size`` (the blur stays within the extents the kernels were sized for, and a
  window with a kernel margin holds it).

  Args:
    rng: source of randomness.
    num: angles to draw (the trajectory's samples).
    max_roll: largest peak-to-peak roll, radians.
    kernel_size: side of the shake's kernel.
    size: ``(height, width)`` of the window.
    origin: ``(y, x)`` of the window in the photo.
    photo: ``(height, width)`` of the photo.

  Returns:
    ``(float64[num] angles (:func:`roll_angles`), (y, x) of the axis in the window's pixels)``.
  """
  axis = (rng.uniform(0, photo[0]) - origin[0], rng.uniform(0, photo[1]) - origin[1])
  corners = np.array([[0, 0], [0, size[1]], [size[0], 0], [size[0], size[1]]], np.float64)
  radius = max(np.hypot(*(corners - axis).T).max(), 1.0)
  span = min(rng.uniform(0, max_roll), (kernel_size - 1) / 2 / radius)
  return roll_angles(rng, num, span), axis


def rolling_kernels(trajectory: np.ndarray, angles: np.ndarray, size: int,
                    chunks: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """Splits a shake with roll into ``chunks`` spans of nearly constant roll.

  The translation is fitted to the kernel grid once (as :func:`trajectory_to_kernel`), so
  the chunks' kernels sum to that kernel; chunk ``j`` holds samples ``t`` of its span,
  weighted ``1 / T``, and rolls by their mean angle.

  Args:
    trajectory: ``complex[T]`` positions in pixels.
    angles: ``float[T]`` roll per sample, radians.
    size: kernel side.
    chunks: number of spans (at most ``T``).

  Returns:
    ``(float64[J] angles, float64[J, size, size] kernels)``, the kernels summing to 1.
  """
  p = fit_to_kernel(trajectory, size)
  spans = np.array_split(np.arange(len(p)), min(chunks, len(p)))
  kernels = np.stack([_splat(p[s], size) for s in spans]) / len(p)
  return np.array([angles[s].mean() for s in spans]), kernels


def _rolled(lin: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
  """``lin`` [H, W, C] rolled by ``angle`` (radians) about ``centre`` (y, x), mirrored at the
  borders as :func:`blur_image` pads; bilinear."""
  if angle == 0.0:
    return lin
  cos, sin = np.cos(angle), np.sin(angle)
  matrix = np.array([[cos, -sin], [sin, cos]])
  offset = np.asarray(centre, np.float64) - matrix @ np.asarray(centre, np.float64)
  # Channel by channel: twice as fast as one 3-D transform with an identity channel axis.
  return np.stack([scipy.ndimage.affine_transform(lin[..., c], matrix, offset=offset, order=1,
                                                  mode="mirror")
                   for c in range(lin.shape[-1])], axis=-1)


def kernel_extent(kernel: np.ndarray, rel: float = 0.02) -> int:
  """Blur extent of a kernel in pixels: the longer side of the box where it is above ``rel``
  of its peak (a straight motion of ``d`` pixels along x gives ``d + 1``)."""
  ys, xs = np.nonzero(kernel > rel * kernel.max())
  return int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)


def blur_image(sharp: np.ndarray, kernel: np.ndarray, rng: np.random.Generator, *,
               gamma: float = 2.2, noise_std: float = 0.01, highlight_gain: float = 1.0,
               shot_noise: float = 0.0, read_noise: float = 0.0,
               roll: np.ndarray | None = None,
               roll_centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
  """Blurs an image with ``kernel`` in linear light and adds noise.

  ``b = clip((k * h(s^gamma) [+ n_sensor])^(1/gamma) + n)``, ``n ~ N(0, noise_std^2)`` in
  [0, 1] display units; ``*`` is a 2-D convolution with reflect boundaries whose output is
  aligned as ``mode="same"`` (kernel centre at ``(size - 1) // 2``). Optional, for realistic
  camera blur:

  * ``h`` (``highlight_gain > 1``, :func:`boost_highlights`): near-white pixels were clipped by
    the camera; their true radiance is higher. They are brightened before the blur and the
    result is clipped at white after it, so that lights smear into bright streaks as in real
    night and backlit photos, instead of into grey smudges.
  * ``n_sensor`` (:func:`add_sensor_noise`): shot and read noise in linear light, after the blur
    and before the display curve, as a sensor adds it: dark regions come out noisier.
  * ``roll`` (:func:`rolling_kernels`): a shake that also rolls the camera, blurring each pixel
    differently: ``sum_j k_j * R_j(h(s^gamma))``, ``R_j`` the rotation by ``roll[j]`` about
    ``roll_centre``.

  Args:
    sharp: ``uint8[H, W, C]`` image.
    kernel: ``float[kh, kw]`` non-negative kernel summing to 1; with ``roll``,
      ``float[J, kh, kw]``, the chunks' kernels summing to 1 together.
    rng: source of the noise.
    gamma: display gamma; 1 blurs the stored values directly.
    noise_std: Gaussian noise standard deviation in [0, 1] display units; 0 adds none.
    highlight_gain: radiance factor of fully saturated pixels; 1 changes nothing.
    shot_noise: shot-noise variance per unit of linear signal (``a`` in ``a x + b^2``).
    read_noise: read-noise standard deviation in linear units (``b``).
    roll: ``float[J]`` roll of each chunk in radians (None: a uniform blur).
    roll_centre: ``(y, x)`` of the optical axis in this image's pixels (may lie outside it).

  Returns:
    ``uint8[H, W, C]`` blurred image.
  """
  sharp = np.asarray(sharp)
  if sharp.ndim != 3 or sharp.dtype != np.uint8:
    raise ValueError(f"blur_image expects uint8[H, W, C], got {sharp.dtype}{list(sharp.shape)}.")
  k = np.asarray(kernel, np.float32)
  kernels, angles = (k, np.asarray(roll, np.float64)) if roll is not None else (k[None], [0.0])
  if kernels.ndim != 3 or len(kernels) != len(angles):
    raise ValueError(f"kernel {list(k.shape)} does not fit roll "
                     f"{None if roll is None else list(np.shape(roll))}.")
  kh, kw = kernels.shape[1:]
  lin = (sharp.astype(np.float32) / 255.0) ** np.float32(gamma)
  if highlight_gain > 1.0:
    lin = boost_highlights(lin, sharp, highlight_gain)
  out = 0.0
  for kj, angle in zip(kernels, angles):
    padded = np.pad(_rolled(lin, float(angle), roll_centre),
                    (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)),
                    mode="reflect" if min(sharp.shape[:2]) > 1 else "edge")
    out = out + scipy.signal.fftconvolve(padded, kj[:, :, None], mode="valid", axes=(0, 1))
  out = np.maximum(out, 0.0)
  if highlight_gain > 1.0:
    out = np.minimum(out, 1.0)  # The sensor saturates after the blur: streaks clip at white.
  if shot_noise > 0 or read_noise > 0:
    out = add_sensor_noise(out, rng, shot_noise, read_noise)
  out = out ** np.float32(1.0 / gamma)
  return add_noise(out, rng, noise_std)


# Display values from which a pixel counts as (partly) clipped by the camera: the boost ramps
# linearly from 0 at this level to its full gain at 255 (a ramp, so no hard edge appears).
HIGHLIGHT_LEVEL = 235


def boost_highlights(lin: np.ndarray, display: np.ndarray, gain: float) -> np.ndarray:
  """Multiplies the linear values of near-white pixels by up to ``gain``.

  Args:
    lin: ``float32[H, W, C]`` linear-light image.
    display: ``uint8[H, W, C]`` the same image in display values (decides what is clipped).
    gain: factor at display value 255 (on the brightest channel); it ramps from 1 at
      :data:`HIGHLIGHT_LEVEL`.

  Returns:
    ``float32[H, W, C]``; pixels whose brightest channel is below the level are unchanged.
  """
  peak = display.max(axis=-1, keepdims=True).astype(np.float32)
  ramp = np.clip((peak - HIGHLIGHT_LEVEL) / (255.0 - HIGHLIGHT_LEVEL), 0.0, 1.0)
  return lin * (1.0 + np.float32(gain - 1.0) * ramp)


def add_sensor_noise(lin: np.ndarray, rng: np.random.Generator, shot: float,
                     read: float) -> np.ndarray:
  """Heteroscedastic sensor noise in linear light: ``x + N(0, shot * x + read^2)``.

  The Poisson-Gaussian model of raw sensor noise (Foi et al. 2008) in its Gaussian
  approximation, as used to synthesise realistic noise for restoration training.

  Args:
    lin: ``float32[H, W, C]`` linear values in [0, 1].
    rng: source of the noise.
    shot: variance per unit of signal.
    read: standard deviation of the signal-independent part.

  Returns:
    ``float32[H, W, C]``, clipped to [0, 1].
  """
  std = np.sqrt(np.float32(shot) * np.maximum(lin, 0.0) + np.float32(read) ** 2)
  noisy = lin + std * rng.standard_normal(lin.shape, dtype=np.float32)
  return np.clip(noisy, 0.0, 1.0)


def add_noise(image: np.ndarray, rng: np.random.Generator, noise_std: float) -> np.ndarray:
  """Adds ``N(0, noise_std^2)`` noise and quantises: ``uint8(round(clip(x + n) * 255))``.

  Args:
    image: ``float[H, W, C]`` in [0, 1], or ``uint8[H, W, C]`` (divided by 255).
    rng: source of the noise (nothing is drawn when ``noise_std`` is 0).
    noise_std: standard deviation in [0, 1] units.

  Returns:
    ``uint8[H, W, C]``.
  """
  out = (image.astype(np.float32) / np.float32(255.0) if image.dtype == np.uint8
         else image.astype(np.float32))
  if noise_std > 0:
    out = out + rng.normal(0.0, noise_std, out.shape).astype(np.float32)
  return (np.clip(out, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
  """JPEG round trip (Pillow, 4:2:0 chroma subsampling as cameras use) of ``uint8[H, W, 3]``."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
  buf.seek(0)
  with Image.open(buf) as im:
    return np.asarray(im.convert("RGB"), np.uint8)
