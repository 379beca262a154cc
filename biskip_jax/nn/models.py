"""The Bi-Skip generator (paper §4.1, Fig. 5; DESIGN §2) and the WGAN critic (DESIGN §3).

Images are NHWC in [-1, 1]. ``BiSkip`` maps a blurred batch ``b`` to ``b + r`` (the global
residual of Fig. 5) for any height and width: sides that are not a multiple of 32 are
reflect-padded and the output is cropped back.

One detail DESIGN §2 leaves implicit: the body's 3x3 conv at each level is conv-norm-act like
every other conv of the paths (the parameter counts DESIGN §2 pins, e.g. 6,082,179 for ``BS``,
include that norm's scale and bias, and match only with it).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from biskip_jax.errors import UserError
from biskip_jax.nn import layers
from biskip_jax.nn.conv import Conv
from biskip_jax.objective.schemes import VARIANTS  # noqa: F401  Table 1's generator bodies (re-exported).

CRITIC_NORMS = ("instance", "none")  # Never batch norm under a gradient penalty (DESIGN §3).
# ResBlock convs on the residual path per variant (Table 1's generator bodies, DESIGN §2).
_RES_CONVS = {"S": 0, "BS-w/o-R": 0, "BS-cR": 1, "BS": 2}

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


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
    dt = layers.dtype_of(self.dtype)
    cna = dict(norm=self.norm, act_slope=self.act_slope, bn_momentum=self.bn_momentum,
               dtype=dt)
    levels = len(self.channels)
    deep = self.variant != "S"
    res_convs = _RES_CONVS[self.variant]

    # Contracting path with shallow (1x1) and deep (3x3) skips per scale.
    h_ = b.astype(dt)
    skips = []
    for i, c in enumerate(self.channels):
      h_ = layers.ConvNormAct(c, 5, name=f"down{i}", **cna)(h_, train)
      h_ = layers.pool2x2(h_, self.pool)
      if i == levels - 1:
        break
      s = layers.conv_layer(self.skip_channels[i], 1, dt, name=f"shallow{i}")(h_)
      h_ = layers.ConvNormAct(c, 3, name=f"body{i}", **cna)(h_, train)
      for k in range(self.num_res_blocks if res_convs else 0):
        h_ = layers.ResBlock(c, res_convs, name=f"res{i}_{k}", **cna)(h_, train)
      d = layers.conv_layer(self.skip_channels[i], 3, dt, name=f"deep{i}")(h_) if deep else None
      skips.append((s, d))

    # Expansive path: transposed conv up, concat skips, 3x3 and 1x1 convs.
    for i in reversed(range(levels)):
      c = self.channels[i]
      h_ = layers.UpConv(c, dtype=dt, platform=self.platform, name=f"up{i}")(h_)
      h_ = layers.Norm(self.norm, self.bn_momentum, dt, name=f"up{i}_norm")(h_, train)
      h_ = nn.leaky_relu(h_, self.act_slope)
      if i >= 1:
        s, d = skips[i - 1]
        h_ = jnp.concatenate([h_, s] + ([d] if d is not None else []), axis=-1)
      h_ = layers.ConvNormAct(c, 3, name=f"dec{i}_a", **cna)(h_, train)
      h_ = layers.ConvNormAct(c, 1, name=f"dec{i}_b", **cna)(h_, train)
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
    dt = layers.dtype_of(self.dtype)
    conv = lambda f, s, name: layers.StridedConv(f, 4, s, dtype=dt, name=name)
    h = nn.leaky_relu(conv(self.features, 2, "conv0")(x.astype(dt)), self.act_slope)
    for k in range(1, self.num_layers + 1):
      h = conv(self.features * min(2 ** k, 8), 2 if k < self.num_layers else 1, f"conv{k}")(h)
      h = layers.Norm(self.norm, dtype=dt, affine=self.norm_affine, name=f"norm{k}")(h, False)
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
