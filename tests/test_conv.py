"""conv.conv2d and conv.Conv against lax.conv_general_dilated and nn.Conv (values, gradients of
first and second order) and the form of the convs XLA:CPU is left to run."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biskip_jax.nn import conv

_DIMS = ("NHWC", "HWIO", "NHWC")


def _reference(x, kernel, padding):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMS)


def _penalty(conv_fn):
  """A gradient-penalty-shaped loss (eq. 7): differentiating it needs second derivatives."""
  def loss(x, kernel):
    gx = jax.grad(lambda x: jnp.sum(jnp.sin(conv_fn(x, kernel))))(x)
    return jnp.sum((jnp.sqrt(jnp.sum(gx ** 2, axis=(1, 2, 3))) - 1) ** 2)
  return loss


@pytest.mark.slow
@pytest.mark.parametrize("x_shape,kernel_shape,padding", [
    ((2, 9, 7, 3), (3, 3, 3, 5), "SAME"),
    ((1, 8, 8, 4), (4, 4, 4, 2), "SAME"),
    ((1, 6, 9, 2), (2, 3, 2, 3), "VALID"),
    ((3, 5, 6, 2), (1, 1, 2, 4), "SAME"),
    ((1, 7, 7, 2), (5, 5, 2, 2), ((1, 3), (0, 2))),
])
def test_conv2d_matches_lax_with_first_and_second_derivatives(x_shape, kernel_shape, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=kernel_shape) * 0.3, jnp.float32)
  np.testing.assert_allclose(conv.conv2d(x, kernel, padding), _reference(x, kernel, padding),
                             rtol=1e-5, atol=1e-5)
  ours = lambda x, k: conv.conv2d(x, k, padding)
  ref = lambda x, k: _reference(x, k, padding)
  first = lambda f: jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))
  for a, b in zip(first(ours)(x, kernel), first(ref)(x, kernel)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  second = lambda f: jax.jit(jax.grad(_penalty(f), argnums=(0, 1)))
  for a, b in zip(second(ours)(x, kernel), second(ref)(x, kernel)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_penalty_double_backward_has_no_reversed_or_dilated_convs():
  """XLA:CPU runs convs with reversed windows or dilations on a slow generic path; JAX's own
  rules for a strided critic's double backward produce them, conv2d's must not."""
  x = jnp.ones((1, 12, 12, 6), jnp.float32)
  kernel = jnp.ones((2, 2, 6, 8), jnp.float32)
  hlo = jax.jit(jax.grad(_penalty(lambda x, k: conv.conv2d(x, k, "VALID")), argnums=(0, 1))
                ).lower(x, kernel).compile().as_text()
  convs = [re.search(r"window=\{[^}]*\}, dim_labels=\S+", line).group(0)
           for line in hlo.splitlines() if " convolution(" in line]
  assert len(convs) >= 5  # forward, input and weight gradients, and their derivatives
  canonical = ("dim_labels=b01f_01io->b01f,", "dim_labels=b0f_0io->b0f,")
  assert not [c for c in convs if "reversal" in c or "dilate" in c
              or not c.endswith(canonical)], convs
  ref_hlo = jax.jit(jax.grad(_penalty(lambda x, k: _reference(x, k, "VALID")),
                             argnums=(0, 1))).lower(x, kernel).compile().as_text()
  assert "reversal" in ref_hlo  # the test can tell the two apart


def test_conv_layer_has_nn_conv_parameters_and_output():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 5, 3)), jnp.float32)
  init = nn.initializers.xavier_uniform()
  ours = conv.Conv(4, (3, 3), kernel_init=init)
  ref = nn.Conv(4, (3, 3), padding="SAME", kernel_init=init)
  v = ours.init(jax.random.key(0), x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, v, ref.init(jax.random.key(0), x))
  v = jax.tree_util.tree_map(lambda a: a + 0.1, v)
  np.testing.assert_allclose(ours.apply(v, x), ref.apply(v, x), rtol=1e-5, atol=1e-5)
  half = conv.Conv(4, (3, 3), dtype=jnp.bfloat16).apply(v, x)
  assert half.dtype == jnp.bfloat16


def test_bad_padding_is_refused():
  with pytest.raises(ValueError, match="padding"):
    conv.conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), "FULL")


def test_cpu_compiler_options_keep_convs_off_ynnpack_with_the_same_values():
  """conv.compiler_options("cpu") turns off XLA:CPU's YNNPACK fusions (its convs ran up to 2x
  slower on this model, benchmarks/RESULTS.md); the program computes the same values."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(1, 16, 16, 16)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 16, 16)), jnp.float32)
  f = lambda x, k: jnp.sum(conv.conv2d(x, k) ** 2, axis=(1, 2))  # a conv and a reduction
  default = jax.jit(f).lower(x, kernel).compile()
  options = conv.compiler_options("cpu")
  ours = jax.jit(f, compiler_options=options).lower(x, kernel).compile()
  assert "__ynn_fusion" in default.as_text()  # the test can tell the two apart
  assert "__ynn_fusion" not in ours.as_text()
  np.testing.assert_allclose(ours(x, kernel), default(x, kernel), rtol=1e-5)
  assert conv.compiler_options("gpu") == {} and conv.compiler_options("tpu") == {}


def test_compiler_options_leave_a_user_set_ynn_flag_alone(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=INDIVIDUAL_CONVOLUTION")
  assert conv.compiler_options("cpu") == {}
