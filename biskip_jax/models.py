"""The Bi-Skip generator (paper §4.1, Fig. 5; DESIGN §2) and the WGAN critic (DESIGN §3).

Images are NHWC in [-1, 1]. ``BiSkip`` maps a blurred batch ``b`` to ``b + r`` (the global
residual of Fig. 5) for any height and width: sides that are not a multiple of 32 are
reflect-padded and the output is cropped back.

One detail DESIGN §2 leaves implicit: the body's 3x3 conv at each level is conv-norm-act like
every other conv of the paths (the parameter counts DESIGN §2 pins, e.g. 6,082,179 for ``BS``,
include that norm's scale and bias, and match only with it).
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from biskip_jax.conv import Conv, conv2d
from biskip_jax.errors import UserError
from biskip_jax.schemes import VARIANTS  # noqa: F401  Table 1's generator bodies (re-exported).

# Names of the config's choices; config_checks validates them, the modules below index by them.
NORMS = ("batch", "instance", "none")
CRITIC_NORMS = ("instance", "none")  # Never batch norm under a gradient penalty (DESIGN §3).
POOLS = ("avg", "max")
# ResBlock convs on the residual path per variant (Table 1's generator bodies, DESIGN §2).
_RES_CONVS = {"S": 0, "BS-w/o-R": 0, "BS-cR": 1, "BS": 2}

_DIMS = ("NHWC", "HWIO", "NHWC")
_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


def _dtype(name: Any) -> Any:
  return jnp.dtype(name) if isinstance(name, str) else name


def _conv(features: int, kernel: int, dtype: Any, name: str | None = None) -> Conv:
  return Conv(features, (kernel, kernel), padding="SAME", use_bias=True, dtype=dtype,
              kernel_init=_xavier, bias_init=_zeros, name=name)


def _pool2x2(x: jax.Array, kind: str) -> jax.Array:
  """2x2 stride-2 average or max pooling: [N, H, W, C] -> [N, H // 2, W // 2, C].

  What ``nn.avg_pool(x, (2, 2), (2, 2))`` and ``nn.max_pool`` compute, in the same operations
  (a ``reduce_window``, then / 4 for the average), written out so that ONNX export
  (``export_lib``) converts the primitive: jax2onnx replaces Flax's pools with its own, whose
  shape rule keeps a symbolic height or width unhalved.
  """
  window = (1, 2, 2, 1)
  return {"avg": lambda: lax.reduce_window(x, 0.0, lax.add, window, window, "VALID") / 4.0,
          "max": lambda: lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")}[kind]()


class _Norm(nn.Module):
  """Batch, instance or no normalisation over the channel axis."""
  kind: str
  momentum: float = 0.9
  dtype: Any = jnp.float32
  affine: bool = True  # Instance norm only: learn a per-channel scale and bias.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.kind == "batch":
      # axis_name stays None: under jit with sharded batches XLA computes global statistics.
      return nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                          dtype=self.dtype, name="bn")(x)
    if self.kind == "instance":
      return nn.InstanceNorm(dtype=self.dtype, use_scale=self.affine, use_bias=self.affine,
                             name="in")(x)
    assert self.kind == "none", self.kind  # Names are validated by config_checks.
    return x


class _ConvNormAct(nn.Module):
  """conv(k x k) -> norm -> LeakyReLU."""
  features: int
  kernel: int
  norm: str
  act_slope: float
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = _conv(self.features, self.kernel, self.dtype, name="conv")(x)
    x = _Norm(self.norm, self.bn_momentum, self.dtype, name="norm")(x, train)
    return nn.leaky_relu(x, self.act_slope)


def _by_platform(rewrite: Callable[..., jax.Array], native: Callable[..., jax.Array],
                 *operands: jax.Array, platform: str | None) -> jax.Array:
  """``rewrite(*operands)`` on CPU, ``native(*operands)`` elsewhere.

  With ``platform=None`` the choice is made when the program is lowered, for the platform it is
  lowered for (``lax.platform_dependent``, as :mod:`biskip_jax.conv` chooses its gradients):
  a program traced on a CPU host but exported for CUDA gets the native form. A platform name
  forces one form (tests compare the two on one machine).
  """
  if platform is None:
    return lax.platform_dependent(*operands, cpu=rewrite, default=native)
  return (rewrite if platform == "cpu" else native)(*operands)


class UpConv(nn.Module):
  """5x5 stride-2 transposed conv ("SAME"), as ``nn.ConvTranspose(features, (5, 5),
  strides=(2, 2), padding="SAME")``: the same function and parameters (``kernel``
  [5, 5, C_in, C_out], ``bias`` [C_out], same initial values).

  On GPUs and TPUs it is that transposed conv (``lax.conv_transpose``). On CPU it is computed
  as a 3x3 conv and a depth-to-space: output pixel ``(2m + a, 2n + b)`` only meets the taps of
  one parity of the 5x5 kernel (rows 1, 3 for a = 0 and 0, 2, 4 for a = 1, likewise columns),
  so the four output phases are one 3x3 conv of the input with 4·C_out channels built from
  those taps (36 taps per 2x2 output block, 11 of them zero, against 25 useful: 1.44x the
  useful FLOPs). Every gradient is then that of a plain stride-1 conv, which XLA:CPU computes
  far faster than the weight gradient of an input-dilated conv (benchmarks/RESULTS.md).

  Attributes:
    features: C_out.
    dtype: compute dtype (parameters stay float32).
    platform: None to choose the form by the platform the program is lowered for; "cpu"
      forces the sub-pixel form, any other name the transposed conv (see
      :func:`_by_platform`).

  Args of ``__call__``: x [N, H, W, C_in]. Returns [N, 2H, 2W, C_out].
  """
  features: int
  dtype: Any = jnp.float32
  platform: str | None = None

  # _TAPS[a][u]: the kernel row of 3x3 tap u (input row m + u - 1) for output parity a; 5 is
  # an appended row of zeros.
  _TAPS = ((1, 3, 5), (0, 2, 4))

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    kernel = self.param("kernel", _xavier, (5, 5, cin, self.features), jnp.float32)
    bias = self.param("bias", _zeros, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=_dtype(self.dtype))
    return _by_platform(self._subpixel, self._transposed, x, kernel,
                        platform=self.platform) + bias

  @staticmethod
  def _transposed(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_DIMS)

  @classmethod
  def _subpixel(cls, x: jax.Array, kernel: jax.Array) -> jax.Array:
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    taps = jnp.asarray(cls._TAPS)
    k3 = padded[taps[:, None, :, None], taps[None, :, None, :]]  # [2, 2, 3, 3, C_in, C_out]
    k3 = jnp.transpose(k3, (2, 3, 4, 0, 1, 5)).reshape(3, 3, cin, 4 * cout)
    y = conv2d(x, k3, "SAME")
    y = y.reshape(n, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, 2 * h, 2 * w, cout)


class StridedConv(nn.Module):
  """k x k stride-s "SAME" conv, as ``nn.Conv(features, (k, k), strides=(s, s),
  padding="SAME")``: the same function and parameters (``kernel`` [k, k, C_in, C_out],
  ``bias`` [C_out], same initial values).

  On GPUs and TPUs it is that strided conv. On CPU it is computed as a space-to-depth and a
  stride-1 conv: the input is padded as "SAME" pads it (and with zeros up to a multiple of s),
  each s x s block becomes one pixel of s²·C_in channels, and the kernel, zero-padded to a
  multiple of s, becomes a ⌈k/s⌉ x ⌈k/s⌉ kernel over those blocks (for the critic's 4x4
  stride 2: a 2x2 conv, no wasted taps). Every gradient is then that of a stride-1 conv:
  XLA:CPU computes the input and weight gradients of a strided conv as dilated convs, which
  made the gradient penalty's double backward several times slower than PyTorch's
  (benchmarks/RESULTS.md).

  Attributes:
    features: C_out.
    kernel_size: k.
    stride: s.
    dtype: compute dtype (parameters stay float32).
    platform: None to choose the form by the platform the program is lowered for; "cpu"
      forces the space-to-depth form, any other name the strided conv (see
      :func:`_by_platform`).

  Args of ``__call__``: x [N, H, W, C_in]. Returns [N, ⌈H/s⌉, ⌈W/s⌉, C_out].
  """
  features: int
  kernel_size: int
  stride: int
  dtype: Any = jnp.float32
  platform: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", _xavier, (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", _zeros, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=_dtype(self.dtype))
    return _by_platform(self._space_to_depth, self._strided, x, kernel,
                        platform=self.platform) + bias

  def _strided(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    s = self.stride
    return lax.conv_general_dilated(x, kernel, (s, s), "SAME", dimension_numbers=_DIMS)

  def _space_to_depth(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    k, s = self.kernel_size, self.stride
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    kb = -(-k // s)  # kernel side in blocks
    pads, blocks = [], []
    for size in (h, w):
      out = -(-size // s)
      lo = max((out - 1) * s + k - size, 0) // 2
      pads.append((lo, (out + kb - 1) * s - size - lo))
      blocks.append(out + kb - 1)
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    x = x.reshape(n, blocks[0], s, blocks[1], s, cin).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, blocks[0], blocks[1], s * s * cin)
    kernel = jnp.pad(kernel, ((0, kb * s - k), (0, kb * s - k), (0, 0), (0, 0)))
    kernel = kernel.reshape(kb, s, kb, s, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    kernel = kernel.reshape(kb, kb, s * s * cin, cout)
    return conv2d(x, kernel, "VALID")


class ResBlock(nn.Module):
  """conv3x3-norm-act-conv3x3-norm + identity (``num_convs=1``: the BS-cR block)."""
  features: int
  num_convs: int
  norm: str
  act_slope: float
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = x
    for k in range(self.num_convs):
      y = _conv(self.features, 3, self.dtype, name=f"conv{k}")(y)
      y = _Norm(self.norm, self.bn_momentum, self.dtype, name=f"norm{k}")(y, train)
      if k < self.num_convs - 1:
        y = nn.leaky_relu(y, self.act_slope)
    return x + y


class BiSkip(nn.Module):
  """Bi-Skip generator G (paper §4.1, Fig. 5) and its Table 1 ablations.

  Attributes:
    variant: "BS" (full), "BS-cR" (one conv per ResBlock), "BS-w/o-R" (no ResBlocks) or
      "S" (Skip-Net: no ResBlocks and no deep skip).
    channels: encoder/decoder channels per level, 5 levels (paper: 32, 64, 128, 128, 128).
    skip_channels: shallow and deep skip channels per level above the smallest.
    num_res_blocks: ResBlocks per level (paper: 3).
    norm: "batch" | "instance" | "none".
    pool: "avg" | "max" 2x2 down-sampling.
    act_slope: LeakyReLU slope.
    bn_momentum: batch-norm running-average momentum.
    zero_residual: initialise the last conv to zero so that G starts as the identity
      ``G(b) = b`` (not in the paper, which uses Xavier everywhere; speeds up short runs).
    dtype: compute dtype (parameters stay float32).
    platform: the form of the up-sampling convs (:class:`UpConv`): None to choose by the
      platform the program is lowered for, a name to force one (ONNX export).
  """
  variant: str = "BS"
  channels: Sequence[int] = (32, 64, 128, 128, 128)
  skip_channels: Sequence[int] = (16, 32, 64, 64)
  num_res_blocks: int = 3
  norm: str = "batch"
  pool: str = "avg"
  act_slope: float = 0.2
  bn_momentum: float = 0.9
  zero_residual: bool = False
  dtype: Any = jnp.float32
  platform: str | None = None

  @property
  def multiple(self) -> int:
    """Input sides are padded to a multiple of this (2 ** number of levels)."""
    return 2 ** len(self.channels)

  def _check(self) -> None:
    if len(self.skip_channels) != len(self.channels) - 1:
      raise ValueError(f"model.skip_channels needs {len(self.channels) - 1} entries (one per "
                       f"level above the smallest), got {tuple(self.skip_channels)}")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Restores a blurred batch.

    Args:
      x: [N, H, W, 3] blurred images in [-1, 1], any H and W.
      train: batch norm uses batch statistics (and updates ``batch_stats``) when True.

    Returns:
      [N, H, W, 3] restored images ``x + r`` (float32, not clipped).
    """
    self._check()
    n, h, w, _ = x.shape
    m = self.multiple
    ph, pw = -h % m, -w % m
    b = x.astype(jnp.float32)
    if ph or pw:
      # Reflect padding needs the pad to be smaller than the side; "edge" covers tiny images
      # (e.g. 1 x 5000) too.
      mode = "reflect" if (ph < h and pw < w) else "edge"
      b = jnp.pad(b, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
    dt = _dtype(self.dtype)
    cna = dict(norm=self.norm, act_slope=self.act_slope, bn_momentum=self.bn_momentum,
               dtype=dt)
    levels = len(self.channels)
    deep = self.variant != "S"
    res_convs = _RES_CONVS[self.variant]

    # Contracting path with shallow (1x1) and deep (3x3) skips per scale.
    h_ = b.astype(dt)
    skips = []
    for i, c in enumerate(self.channels):
      h_ = _ConvNormAct(c, 5, name=f"down{i}", **cna)(h_, train)
      h_ = _pool2x2(h_, self.pool)
      if i == levels - 1:
        break
      s = _conv(self.skip_channels[i], 1, dt, name=f"shallow{i}")(h_)
      h_ = _ConvNormAct(c, 3, name=f"body{i}", **cna)(h_, train)
      for k in range(self.num_res_blocks if res_convs else 0):
        h_ = ResBlock(c, res_convs, name=f"res{i}_{k}", **cna)(h_, train)
      d = _conv(self.skip_channels[i], 3, dt, name=f"deep{i}")(h_) if deep else None
      skips.append((s, d))

    # Expansive path: transposed conv up, concat skips, 3x3 and 1x1 convs.
    for i in reversed(range(levels)):
      c = self.channels[i]
      h_ = UpConv(c, dtype=dt, platform=self.platform, name=f"up{i}")(h_)
      h_ = nn.leaky_relu(_Norm(self.norm, self.bn_momentum, dt, name=f"up{i}_norm")(h_, train),
                         self.act_slope)
      if i >= 1:
        s, d = skips[i - 1]
        h_ = jnp.concatenate([h_, s] + ([d] if d is not None else []), axis=-1)
      h_ = _ConvNormAct(c, 3, name=f"dec{i}_a", **cna)(h_, train)
      h_ = _ConvNormAct(c, 1, name=f"dec{i}_b", **cna)(h_, train)
    r = Conv(3, (1, 1), dtype=dt, bias_init=_zeros, name="out",
             kernel_init=_zeros if self.zero_residual else _xavier)(h_).astype(jnp.float32)
    y = b + r
    return y[:, :h, :w, :]


class Critic(nn.Module):
  """PatchGAN WGAN critic D (DESIGN §3: DeblurGAN's ``NLayerDiscriminator``, no sigmoid).

  With ``num_layers = L`` (DeblurGAN's ``n_layers``): conv4x4 s2 (F) -> LReLU;
  for k = 1..L-1: conv4x4 s2 (min(2^k, 8) F) -> norm -> LReLU; conv4x4 s1 (min(2^L, 8) F) ->
  norm -> LReLU; conv4x4 s1 (1). L stride-2 convs in all: L = 3 gives DeblurGAN's 70x70
  receptive field (1 + 3 (1 + 2 + 4 + 8 + 8)), 64 s2 -> 128 s2 -> 256 s2 -> 512 s1 -> 1 s1 and
  2,764,737 conv parameters. A sample's score is the mean of its output map, so each score
  depends on that sample alone (needed by the per-sample gradient penalty). Norm is instance
  norm (without scale and bias by default, as DeblurGAN's ``InstanceNorm2d(affine=False)``) or
  none; batch norm is refused (``CRITIC_NORMS``), since it couples samples and breaks the
  gradient penalty.

  Deviation, deliberately: convs pad "SAME" (a 256x256 crop gives a 32x32 score map) where
  DeblurGAN pads every 4x4 conv by 2 (a 35x35 map). Layers, parameters and the 70x70 receptive
  field are DeblurGAN's; only the border cells of the map differ.

  Attributes:
    features: channels of the first conv (64).
    num_layers: stride-2 convs, the first included (>= 1; 3 for the 70x70 PatchGAN).
    norm: "instance" | "none".
    norm_affine: learn a per-channel scale and bias after the instance norm.
    conditional: if True, ``__call__`` takes the blurred image and concatenates it.
    act_slope: LeakyReLU slope.
    dtype: compute dtype.
  """
  features: int = 64
  num_layers: int = 3
  norm: str = "instance"
  norm_affine: bool = False
  conditional: bool = False
  act_slope: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, blurred: jax.Array | None = None) -> jax.Array:
    """Scores a batch.

    Args:
      x: [N, H, W, 3] sharp or restored images in [-1, 1].
      blurred: [N, H, W, 3] blurred inputs, required iff ``conditional``.

    Returns:
      [N] float32 scores (higher means "more like a sharp image").
    """
    if self.conditional:
      if blurred is None:
        raise ValueError("a conditional critic needs the blurred input")
      x = jnp.concatenate([x, blurred], axis=-1)
    dt = _dtype(self.dtype)
    conv = lambda f, s, name: StridedConv(f, 4, s, dtype=dt, name=name)
    h = nn.leaky_relu(conv(self.features, 2, "conv0")(x.astype(dt)), self.act_slope)
    for k in range(1, self.num_layers + 1):
      h = conv(self.features * min(2 ** k, 8), 2 if k < self.num_layers else 1, f"conv{k}")(h)
      h = _Norm(self.norm, dtype=dt, affine=self.norm_affine, name=f"norm{k}")(h, False)
      h = nn.leaky_relu(h, self.act_slope)
    h = conv(1, 1, "out")(h)
    return jnp.mean(h.astype(jnp.float32), axis=(1, 2, 3))


def _fields(section: Any) -> dict[str, Any]:
  """A config section as keyword arguments (lists as tuples: module attributes are hashed)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def generator_from_config(model_config: Any, dtype: str | None = None,
                          platform: str | None = None) -> BiSkip:
  """Builds a :class:`BiSkip` from ``config.model`` (every field is an attribute of the same
  name); ``dtype`` overrides its compute dtype, ``platform`` forces the form of its
  up-sampling convs (``BiSkip.platform``)."""
  fields = _fields(model_config)
  return BiSkip(**{**fields, "dtype": dtype or fields["dtype"]}, platform=platform)


def critic_from_config(critic_config: Any, dtype: str = "float32") -> Critic:
  """Builds a :class:`Critic` from ``config.critic`` (every field is an attribute of the same
  name) computing in ``dtype`` (the critic only trains, so its dtype is
  ``train.compute_dtype``; parameters stay float32)."""
  return Critic(**_fields(critic_config), dtype=dtype)


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (running statistics are not parameters)."""
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


def _leaf_name(path: tuple[Any, ...]) -> str:
  """``params/Conv_0/kernel`` for a pytree path (dict keys, attributes, list indices)."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_shapes(arrays: Any, expected: Any, where: str, hint: str = "") -> None:
  """The one check of arrays read from a file against the shapes a config's model needs.

  Args:
    arrays: a tree of arrays read back (a checkpoint's train state or generator, a shipped
      model, a warm start's source).
    expected: the tree the model needs, of arrays or ``jax.ShapeDtypeStruct``.
    where: what ``arrays`` are, e.g. ``"the checkpoint RUN/checkpoints/5"``: the message
      starts with it.
    hint: what the user can do, appended to the message.

  Raises:
    UserError: a leaf missing, one the model lacks, or one of another shape (the first three
      named, on one line).
  """
  got = {_leaf_name(p): tuple(np.shape(x))
         for p, x in jax.tree_util.tree_leaves_with_path(arrays)}
  want = {_leaf_name(p): tuple(np.shape(x))
          for p, x in jax.tree_util.tree_leaves_with_path(expected)}
  if got == want:
    return
  diffs = []
  for name in sorted(got.keys() | want.keys()):
    if name not in got:
      diffs.append(f"{name} is missing")
    elif name not in want:
      diffs.append(f"{name} is not in the model")
    elif got[name] != want[name]:
      diffs.append(f"{name} has shape {got[name]}, the model needs {want[name]}")
  more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
  raise UserError(f"{where} does not fit the config's model ({'; '.join(diffs[:3])}{more})"
                  + (f": {hint}" if hint else ""))
