"""Stride-1 2-D convolution whose gradients XLA:CPU computes fast.

Every conv of the generator, the critic and VGG19 goes through :func:`conv2d`. Its forward
pass is ``lax.conv_general_dilated``. Its backward pass is written out by hand, on CPU only
(other platforms keep JAX's own rule, which cuDNN serves well):

* input gradient: a forward conv of ``dy`` with the flipped, transposed kernel;
* weight gradient (:func:`_weight_grad`): the ``kw`` column shifts of the padded input are
  stacked, and one 1-D conv along the rows contracts rows, columns and batch at once, with
  ``N·W`` features per row. JAX's rule instead emits a conv whose window is the whole image
  and whose feature size is the batch (1 in the paper's step), which XLA:CPU runs at a small
  fraction of its forward speed (benchmarks/RESULTS.md).

Both are themselves written with :func:`conv2d` and a small custom VJP, so that the gradient
penalty of eq. 7 (a gradient of a gradient) stays on fast convs too. JAX's rule there ends in
convs that XLA rewrites with reversed windows (``ConvOperandSwapper``), which XLA:CPU runs on a
slow generic path, several times PyTorch's time for the penalty's double backward
(benchmarks/RESULTS.md). Optimisation barriers keep XLA from folding the transposes and pads
back into the conv, which would bring those forms back.

Programs built on these convs should be compiled with :func:`compiler_options`: on CPU it
keeps XLA's own convolution kernels rather than YNNPACK's.

Shapes: x [N, H, W, C_in], kernel [kh, kw, C_in, C_out] (NHWC / HWIO, as ``nn.Conv``).
"""

import functools
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]
_DIMS = ("NHWC", "HWIO", "NHWC")
# XLA:CPU option naming the op kinds it hands to YNNPACK; "" hands none (XLA's own kernels).
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def _cpu_accepts(option: str, value: str) -> bool:
  """Whether this jaxlib's CPU compiler knows ``option`` (it is an experimental flag)."""
  try:
    x = jax.device_put(jnp.zeros(()), jax.devices("cpu")[0])
    jax.jit(lambda x: x + 1).lower(x).compile(compiler_options={option: value})
  except Exception:  # noqa: BLE001 -- an unknown option or value: leave XLA's default.
    return False
  return True


def compiler_options(platform: str) -> dict[str, str]:
  """XLA compile options for a program of these convs on ``platform`` (``jax.jit(...,
  compiler_options=...)``).

  On CPU, jaxlib 0.10's XLA runs convolutions and reductions through YNNPACK by default. On
  this model its convs were slower than XLA's own (Eigen) ones, the small layers most, and so
  were the generator's forward pass and the train step (benchmarks/RESULTS.md, "YNNPACK"). So
  CPU programs turn YNNPACK fusions off. Other platforms, a jaxlib
  without the option, or ``XLA_FLAGS`` that set it (the user's choice, e.g. on a CPU where
  YNNPACK is faster): ``{}``.
  """
  if (platform != "cpu" or _YNN_OPTION in os.environ.get("XLA_FLAGS", "")
      or not _cpu_accepts(_YNN_OPTION, "")):
    return {}
  return {_YNN_OPTION: ""}


def same_padding(kernel_shape: Sequence[int]) -> Padding:
  """``"SAME"`` padding of a stride-1 conv: (k - 1) // 2 before, the rest after."""
  return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape[:2])


def _plain(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMS)


def _transposed_padding(padding: Padding, kernel_shape: Sequence[int]) -> Padding:
  return tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(padding, kernel_shape[:2]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _input_grad(dy: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """∂/∂x of ``conv2d(x, kernel, padding)`` applied to ``dy``: [N, H, W, C_in]."""
  flipped = lax.optimization_barrier(jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  return conv2d(dy, flipped, _transposed_padding(padding, kernel.shape))


def _input_grad_fwd(dy, kernel, padding):
  return _input_grad(dy, kernel, padding), (dy, kernel)


def _input_grad_bwd(padding, residuals, h):
  # <h, input_grad(dy, k)> = <dy, conv2d(h, k)>: so ∂/∂k is the weight gradient of the forward
  # conv at (h, dy), in the kernel's own layout (no flipped, transposed copy of a big kernel
  # gradient, which XLA:CPU fuses into later updates with a strided access pattern).
  dy, kernel = residuals
  return conv2d(h, kernel, padding), _weight_grad(h, dy, padding, kernel.shape[:2])


_input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _weight_grad(x: jax.Array, dy: jax.Array, padding: Padding,
                 kernel_hw: tuple[int, int]) -> jax.Array:
  """∂/∂kernel of ``conv2d(x, kernel, padding)`` applied to ``dy``: [kh, kw, C_in, C_out].

  ``Σ_{n,i,j} x_pad[n, i + a, j + b, c] · dy[n, i, j, o]`` as one 1-D conv: batch (b, c),
  length H_pad, features (n, j) for the input; window H_out, features (n, j) for ``dy``.
  """
  kh, kw = kernel_hw
  n, h_out, w_out, c_out = dy.shape
  c_in = x.shape[-1]
  zero = jnp.zeros((), x.dtype)
  xp = lax.pad(x, zero, ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
  shifted = jnp.stack([xp[:, :, b:b + w_out, :] for b in range(kw)])  # [kw, N, Hp, Wo, C]
  lhs = shifted.transpose(0, 4, 2, 1, 3).reshape(kw * c_in, xp.shape[1], n * w_out)
  rhs = dy.transpose(1, 0, 2, 3).reshape(h_out, n * w_out, c_out)
  lhs, rhs = lax.optimization_barrier((lhs, rhs))
  out = lax.conv_general_dilated(lhs, rhs, (1,), "VALID",
                                 dimension_numbers=("NHC", "HIO", "NHC"))  # [kw·C, kh, O]
  return out.reshape(kw, c_in, kh, c_out).transpose(2, 0, 1, 3)


def _weight_grad_fwd(x, dy, padding, kernel_hw):
  return _weight_grad(x, dy, padding, kernel_hw), (x, dy)


def _weight_grad_bwd(padding, kernel_hw, residuals, g):
  # The weight gradient is bilinear in (x, dy); g [kh, kw, C_in, C_out] plays the kernel.
  x, dy = residuals
  return _input_grad(dy, g, padding), conv2d(x, g, padding)


_weight_grad.defvjp(_weight_grad_fwd, _weight_grad_bwd)


def _cpu_grads(x, kernel, dy, padding):
  return _input_grad(dy, kernel, padding), _weight_grad(x, dy, padding, kernel.shape[:2])


def _jax_grads(x, kernel, dy, padding):
  return jax.vjp(lambda x, k: _plain(x, k, padding), x, kernel)[1](dy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv2d(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  return _plain(x, kernel, padding)


def _conv2d_fwd(x, kernel, padding):
  # Calls the custom-VJP function (not _plain) so that a second derivative uses these rules.
  return _conv2d(x, kernel, padding), (x, kernel)


def _conv2d_bwd(padding, residuals, dy):
  x, kernel = residuals
  return lax.platform_dependent(x, kernel, dy,
                                cpu=functools.partial(_cpu_grads, padding=padding),
                                default=functools.partial(_jax_grads, padding=padding))


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(x: jax.Array, kernel: jax.Array,
           padding: str | Sequence[tuple[int, int]] = "SAME") -> jax.Array:
  """Stride-1 conv, as ``lax.conv_general_dilated`` (NHWC, HWIO), with CPU-fast gradients.

  Args:
    x: [N, H, W, C_in].
    kernel: [kh, kw, C_in, C_out], same dtype as ``x``.
    padding: "SAME", "VALID" or ((top, bottom), (left, right)).

  Returns:
    [N, H + top + bottom - kh + 1, W + left + right - kw + 1, C_out].
  """
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
    padding = same_padding(kernel.shape) if padding == "SAME" else ((0, 0), (0, 0))
  return _conv2d(x, kernel, tuple((int(lo), int(hi)) for lo, hi in padding))


class Conv(nn.Module):
  """Stride-1 conv layer on :func:`conv2d`; the parameters of ``nn.Conv`` (same names, shapes,
  initial values), so checkpoints and ported weights are interchangeable with it.

  Attributes:
    features: C_out.
    kernel_size: (kh, kw).
    padding: "SAME", "VALID" or ((top, bottom), (left, right)).
    use_bias: add a [C_out] bias.
    dtype: compute dtype (parameters stay float32).
    kernel_init, bias_init: initialisers.
  """
  features: int
  kernel_size: tuple[int, int]
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [N, H, W, C_in] -> [N, H', W', C_out] (H' = H with "SAME")."""
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) \
        if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, self.padding)
    return y if bias is None else y + bias
