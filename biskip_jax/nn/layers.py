"""Layers of the generator and the critic (DESIGN §2-3): conv-norm-act blocks, ResBlocks, and
the strided and up-sampling convs with their CPU rewrites.

Images are NHWC. Every class here is given an explicit ``name`` by its parent module, so the
parameter trees of ``models.BiSkip`` and ``models.Critic`` do not depend on these class names.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from biskip_jax.nn.conv import Conv, conv2d

# Names of the config's choices; config_checks validates them, the modules index by them.
NORMS = ("batch", "instance", "none")
POOLS = ("avg", "max")

_DIMS = ("NHWC", "HWIO", "NHWC")
_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


def dtype_of(name: Any) -> Any:
  return jnp.dtype(name) if isinstance(name, str) else name


def conv_layer(features: int, kernel: int, dtype: Any, name: str | None = None) -> Conv:
  return Conv(features, (kernel, kernel), padding="SAME", use_bias=True, dtype=dtype,
              kernel_init=_xavier, bias_init=_zeros, name=name)


def pool2x2(x: jax.Array, kind: str) -> jax.Array:
  """2x2 stride-2 average or max pooling: [N, H, W, C] -> [N, H // 2, W // 2, C].

  What ``nn.avg_pool(x, (2, 2), (2, 2))`` and ``nn.max_pool`` compute, in the same operations
  (a ``reduce_window``, then / 4 for the average), written out so that ONNX export
  (``export_lib``) converts the primitive: jax2onnx replaces Flax's pools with its own, whose
  shape rule keeps a symbolic height or width unhalved.
  """
  window = (1, 2, 2, 1)
  return {"avg": lambda: lax.reduce_window(x, 0.0, lax.add, window, window, "VALID") / 4.0,
          "max": lambda: lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")}[kind]()


class Norm(nn.Module):
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


class ConvNormAct(nn.Module):
  """conv(k x k) -> norm -> LeakyReLU."""
  features: int
  kernel: int
  norm: str
  act_slope: float
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = conv_layer(self.features, self.kernel, self.dtype, name="conv")(x)
    x = Norm(self.norm, self.bn_momentum, self.dtype, name="norm")(x, train)
    return nn.leaky_relu(x, self.act_slope)


def by_platform(rewrite: Callable[..., jax.Array], native: Callable[..., jax.Array],
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
      :func:`by_platform`).

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
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=dtype_of(self.dtype))
    return by_platform(self._subpixel, self._transposed, x, kernel,
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
      :func:`by_platform`).

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
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=dtype_of(self.dtype))
    return by_platform(self._space_to_depth, self._strided, x, kernel,
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
      y = conv_layer(self.features, 3, self.dtype, name=f"conv{k}")(y)
      y = Norm(self.norm, self.bn_momentum, self.dtype, name=f"norm{k}")(y, train)
      if k < self.num_convs - 1:
        y = nn.leaky_relu(y, self.act_slope)
    return x + y
