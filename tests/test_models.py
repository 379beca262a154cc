"""Tests for the Bi-Skip generator and the critic (DESIGN §2–3)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biskip_jax.nn import layers, models

# DESIGN §2: parameter counts with batch norm (scale and bias counted, running stats not).
PARAM_COUNTS = {"BS": 6_082_179, "BS-cR": 5_056_035, "BS-w/o-R": 4_029_891, "S": 3_665_683}
TINY = dict(channels=(4, 8, 8, 8, 8), skip_channels=(2, 4, 4, 4), num_res_blocks=1)


def _key(seed=0):
  # "rbg" compiles parameter init ~5x faster than threefry on CPU (config.rng_impl).
  return jax.random.key(seed, impl="rbg")


def _shapes(model, h=64, w=64):
  return jax.eval_shape(lambda: model.init(_key(), jnp.zeros((1, h, w, 3))))


_INIT_CACHE = {}


def _init(model, x=None):
  """Initialises ``model`` once per configuration (parameters do not depend on H, W)."""
  del x
  key = repr(model)
  if key not in _INIT_CACHE:
    _INIT_CACHE[key] = jax.jit(lambda x: model.init(_key(), x, train=False))(
        jnp.zeros((1, 32, 32, 3)))
  return _INIT_CACHE[key]


def _apply(model, variables, x, **kwargs):
  return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


@pytest.mark.parametrize("variant", list(PARAM_COUNTS))
def test_param_counts_match_design(variant):
  variables = _shapes(models.BiSkip(variant=variant))
  assert models.count_params(variables["params"]) == PARAM_COUNTS[variant]
  # Running statistics are not parameters and live in their own collection.
  assert "batch_stats" in variables


def test_norm_choices_change_only_norm_params():
  batch = models.count_params(_shapes(models.BiSkip(norm="batch"))["params"])
  inst = _shapes(models.BiSkip(norm="instance"))
  none = _shapes(models.BiSkip(norm="none"))
  assert models.count_params(inst["params"]) == batch
  assert "batch_stats" not in inst and "batch_stats" not in none
  n_norm = sum(int(x.size) for path, x in jax.tree_util.tree_leaves_with_path(
      _shapes(models.BiSkip())["params"]) if "bn" in jax.tree_util.keystr(path))
  assert models.count_params(none["params"]) == batch - n_norm > 0


@pytest.mark.slow
@pytest.mark.parametrize("h,w", [(37, 53), (32, 32), (1, 5), (64, 33)])
def test_any_size_output_shape(h, w):
  model = models.BiSkip(**TINY)
  x = jax.random.uniform(_key(1), (2, h, w, 3), minval=-1, maxval=1)
  y = _apply(model, _init(model, x), x, train=False)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert np.isfinite(np.asarray(y)).all()


def test_full_model_shape_at_gopro_resolution():
  model = models.BiSkip()
  variables = _shapes(model)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                       jax.ShapeDtypeStruct((1, 720, 1280, 3), jnp.float32))
  assert out.shape == (1, 720, 1280, 3)


@pytest.mark.slow
def test_tiny_model_runs_at_720p():
  model = models.BiSkip(**TINY)
  x = jnp.zeros((1, 720, 1280, 3))
  y = _apply(model, _init(model, x[:, :64, :64]), x, train=False)
  assert y.shape == (1, 720, 1280, 3)


def test_global_residual_identity_when_last_conv_is_zero():
  model = models.BiSkip(**TINY)
  x = jax.random.uniform(_key(2), (2, 40, 48, 3), minval=-1, maxval=1)
  variables = flax.core.unfreeze(_init(model, x))
  variables["params"]["out"] = jax.tree_util.tree_map(jnp.zeros_like,
                                                      variables["params"]["out"])
  y = _apply(model, variables, x, train=False)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


@pytest.mark.slow
def test_train_updates_batch_stats_and_eval_does_not():
  model = models.BiSkip(**TINY)
  x = jax.random.normal(_key(3), (2, 32, 32, 3))
  variables = _init(model, x)
  _, updated = _apply(model, variables, x, train=True, mutable=["batch_stats"])
  before = jax.tree_util.tree_leaves(variables["batch_stats"])
  after = jax.tree_util.tree_leaves(updated["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  _, same = _apply(model, variables, x, train=False, mutable=["batch_stats"])
  for a, b in zip(before, jax.tree_util.tree_leaves(same["batch_stats"])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_eval_uses_running_statistics():
  """In eval mode a sample's output does not depend on the rest of the batch."""
  model = models.BiSkip(**TINY)
  x = jax.random.normal(_key(4), (3, 32, 32, 3))
  variables = _init(model, x)
  full = _apply(model, variables, x, train=False)
  single = _apply(model, variables, x[:1], train=False)
  np.testing.assert_allclose(np.asarray(full[:1]), np.asarray(single), atol=1e-5)
  train_full, _ = _apply(model, variables, x, train=True, mutable=["batch_stats"])
  train_single, _ = _apply(model, variables, x[:1], train=True, mutable=["batch_stats"])
  assert not np.allclose(np.asarray(train_full[:1]), np.asarray(train_single), atol=1e-4)


def _module_names(variant):
  return set(_shapes(models.BiSkip(variant=variant))["params"])


@pytest.mark.slow
def test_variants_have_the_right_blocks():
  s, wor, cr, bs = (_module_names(v) for v in ("S", "BS-w/o-R", "BS-cR", "BS"))
  assert not any(n.startswith("deep") for n in s)
  assert not any(n.startswith("res") for n in s | wor)
  assert {f"deep{i}" for i in range(4)} <= wor & cr & bs
  assert {f"shallow{i}" for i in range(4)} <= s & wor & cr & bs
  assert {f"res{i}_{k}" for i in range(4) for k in range(3)} <= cr & bs
  # The smallest scale has no skips and no body (Fig. 5).
  assert not any(n.endswith("4") and n.startswith(("deep", "shallow", "body")) for n in bs)
  params = _shapes(models.BiSkip(variant="BS-cR"))["params"]
  assert set(params["res0_0"]) == {"conv0", "norm0"}
  assert set(_shapes(models.BiSkip(variant="BS"))["params"]["res0_0"]) == {
      "conv0", "norm0", "conv1", "norm1"}


def test_skip_concat_widths():
  """Decoder level i>=1 sees [up, shallow, deep] (BS) or [up, shallow] (S)."""
  bs = _shapes(models.BiSkip(variant="BS"))["params"]
  s = _shapes(models.BiSkip(variant="S"))["params"]
  assert bs["dec1_a"]["conv"]["kernel"].shape == (3, 3, 64 + 16 + 16, 64)
  assert s["dec1_a"]["conv"]["kernel"].shape == (3, 3, 64 + 16, 64)
  assert bs["dec0_a"]["conv"]["kernel"].shape == (3, 3, 32, 32)  # no skip at full scale


@pytest.mark.slow
def test_xavier_init_and_zero_bias():
  params = _init(models.BiSkip(), jnp.zeros((1, 32, 32, 3)))["params"]
  k = np.asarray(params["body2"]["conv"]["kernel"])  # 3x3x128x128
  fan_in, fan_out = 9 * 128, 9 * 128
  np.testing.assert_allclose(k.var(), 2.0 / (fan_in + fan_out), rtol=0.05)
  assert np.all(np.asarray(params["body2"]["conv"]["bias"]) == 0)


@pytest.mark.slow
def test_max_pool_and_bfloat16():
  x = jax.random.uniform(_key(5), (1, 32, 32, 3), minval=-1, maxval=1)
  m32 = models.BiSkip(**TINY, norm="none")
  v = _init(m32, x)
  y32 = _apply(m32, v, x)
  y16 = _apply(models.BiSkip(**TINY, norm="none", dtype="bfloat16"), v, x)
  assert y16.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y16), np.asarray(y32), atol=0.05)
  mmax = models.BiSkip(**TINY, pool="max")
  assert _apply(mmax, _init(mmax, x), x).shape == x.shape


def test_skip_channels_must_match_the_levels():
  # Names and ranges are checked by config_checks (test_train_lib); this is the model's own.
  with pytest.raises(ValueError, match="skip_channels"):
    _shapes(models.BiSkip(skip_channels=(1, 2)))


@pytest.mark.slow
def test_critic_scores_one_per_sample_independently():
  critic = models.Critic(features=8)
  x = jax.random.uniform(_key(6), (3, 64, 64, 3), minval=-1, maxval=1)
  v = jax.jit(critic.init)(_key(0), x)
  scores = _apply(critic, v, x)
  assert scores.shape == (3,)
  x2 = x.at[1].set(-x[1])
  scores2 = _apply(critic, v, x2)
  np.testing.assert_allclose(np.asarray(scores2)[[0, 2]], np.asarray(scores)[[0, 2]],
                             rtol=1e-5, atol=1e-6)
  assert not np.isclose(float(scores2[1]), float(scores[1]))
  assert "batch_stats" not in v


@pytest.mark.slow
def test_critic_is_unbounded_no_sigmoid():
  critic = models.Critic(features=8, norm="none")
  x = jnp.ones((1, 64, 64, 3))
  v = jax.jit(critic.init)(_key(0), x)
  big = jax.tree_util.tree_map(lambda p: p * 50.0, v)
  s = np.abs(np.asarray(_apply(critic, big, x)))
  assert s.max() > 1.0


# DESIGN §3 (DeblurGAN's NLayerDiscriminator, n_layers=3): (out channels, stride) per 4x4 conv.
PATCHGAN_LAYERS = [(64, 2), (128, 2), (256, 2), (512, 1), (1, 1)]


@pytest.mark.slow
def test_critic_is_deblurgans_70x70_patchgan():
  critic = models.Critic(norm="none")
  x = jax.random.uniform(_key(3), (1, 256, 256, 3), minval=-1, maxval=1)
  v = jax.jit(critic.init)(_key(0), x)
  names = [f"conv{k}" for k in range(4)] + ["out"]
  assert sorted(v["params"]) == sorted(names)
  cin, size, expected_count = 3, 256, 0
  _, inter = critic.apply(v, x, capture_intermediates=True)
  for name, (cout, stride) in zip(names, PATCHGAN_LAYERS):
    assert v["params"][name]["kernel"].shape == (4, 4, cin, cout), name
    size //= stride
    assert inter["intermediates"][name]["__call__"][0].shape == (1, size, size, cout), name
    expected_count += 4 * 4 * cin * cout + cout
    cin = cout
  assert expected_count == 2_764_737  # DESIGN §3 / the issue: DeblurGAN's conv parameters.
  assert models.count_params(v["params"]) == expected_count

  # Receptive field, measured: the input pixels that one output cell depends on.
  def cell(x):
    _, st = critic.apply(v, x, capture_intermediates=True)
    return st["intermediates"]["out"]["__call__"][0][0, 16, 16, 0]
  g = np.abs(np.asarray(jax.jit(jax.grad(cell))(x)))[0].sum(-1)
  rows, cols = np.nonzero(g.sum(1))[0], np.nonzero(g.sum(0))[0]
  # 4x4 kernels with strides 2, 2, 2, 1, 1: 1 + 3 * (1 + 2 + 4 + 8 + 8) = 70.
  assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_critic_instance_norm_is_deblurgans_without_affine():
  params = jax.eval_shape(lambda: models.Critic().init(
      _key(0), jnp.zeros((1, 64, 64, 3))))["params"]
  assert not any(k.startswith("norm") for k in params)  # InstanceNorm2d(affine=False).
  params = jax.eval_shape(lambda: models.Critic(norm_affine=True).init(
      _key(0), jnp.zeros((1, 64, 64, 3))))["params"]
  assert [params[f"norm{k}"]["in"]["scale"].shape for k in (1, 2, 3)] == [(128,), (256,), (512,)]


@pytest.mark.slow
def test_critic_conditioning_and_bad_settings():
  cond = models.Critic(features=8, conditional=True)
  x = jnp.zeros((2, 32, 32, 3))
  v = cond.init(_key(0), x, x)
  assert v["params"]["conv0"]["kernel"].shape[2] == 6
  assert cond.apply(v, x, x).shape == (2,)
  with pytest.raises(ValueError, match="blurred"):
    cond.apply(v, x)


@pytest.mark.slow
def test_zero_residual_option_starts_at_identity():
  model = models.BiSkip(**TINY, zero_residual=True)
  x = jax.random.uniform(_key(7), (1, 40, 48, 3), minval=-1, maxval=1)
  np.testing.assert_array_equal(np.asarray(_apply(model, _init(model), x)), np.asarray(x))
  assert np.all(np.asarray(_init(models.BiSkip(**TINY))["params"]["out"]["kernel"]) != 0)


@pytest.mark.parametrize("platform", ["cpu", "cuda"])
@pytest.mark.parametrize("shape", [(2, 7, 5, 6), (1, 4, 4, 3)])
@pytest.mark.slow
def test_upconv_equals_flax_conv_transpose(shape, platform):
  """UpConv is nn.ConvTranspose(5x5, stride 2, SAME): same init, output, grads, in the CPU
  (sub-pixel) form and the other platforms' (transposed conv) form alike."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  up = layers.UpConv(4, platform=platform)
  ref = flax.linen.ConvTranspose(4, (5, 5), strides=(2, 2), padding="SAME",
                                 kernel_init=flax.linen.initializers.xavier_uniform())
  v = up.init(jax.random.key(1), x)
  v_ref = ref.init(jax.random.key(1), x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, v, v_ref)
  v = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape),
                             v)
  y, y_ref = up.apply(v, x), ref.apply(v, x)
  assert y.shape == (shape[0], 2 * shape[1], 2 * shape[2], 4)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))
  g = jax.grad(loss(up), argnums=(0, 1))(v, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(v, x)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                         g, g_ref)


def _penalty(m):
  """eq. 7's shape: a norm of the input gradient, differentiated again."""
  def f(v, x):
    gx = jax.grad(lambda x: jnp.sum(jnp.sin(m.apply(v, x))))(x)
    return jnp.sum(jnp.sqrt(jnp.sum(gx ** 2, axis=(1, 2, 3))) - 1) ** 2
  return f


@pytest.mark.parametrize("platform", ["cpu", "cuda"])
@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 8, 6, 3), 4, 2), ((1, 7, 9, 2), 4, 2), ((1, 5, 5, 2), 4, 1), ((1, 9, 4, 2), 3, 2),
    ((1, 10, 7, 2), 5, 3)])
@pytest.mark.slow
def test_strided_conv_equals_flax_conv(shape, kernel, stride, platform):
  """StridedConv is nn.Conv(k, stride s, SAME): same init, output, grads and GP double grads,
  in the CPU (space-to-depth) form and the other platforms' (strided conv) form alike."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  conv = layers.StridedConv(4, kernel, stride, platform=platform)
  ref = flax.linen.Conv(4, (kernel, kernel), strides=(stride, stride), padding="SAME",
                        kernel_init=flax.linen.initializers.xavier_uniform())
  v = conv.init(jax.random.key(1), x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, v, ref.init(jax.random.key(1), x))
  v = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape),
                             v)
  y, y_ref = conv.apply(v, x), ref.apply(v, x)
  assert y.shape == (shape[0], -(-shape[1] // stride), -(-shape[2] // stride), 4)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g = jax.grad(_penalty(conv), argnums=(0, 1))(v, x)
  g_ref = jax.grad(_penalty(ref), argnums=(0, 1))(v, x)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                         g, g_ref)


@pytest.mark.slow
@pytest.mark.parametrize("layer", [layers.UpConv(6), layers.StridedConv(6, 4, 2)],
                         ids=["UpConv", "StridedConv"])
def test_cpu_rewrites_and_native_convs_agree_and_share_parameters(layer):
  """The two forms of each layer take one parameter tree (a checkpoint loads on any platform)
  and compute the same outputs, gradients and penalty gradients; unforced, a CPU program runs
  the CPU form and a program lowered for CUDA holds the native conv (stride or dilation 2)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 6, 5)), jnp.float32)
  forms = {p: layer.clone(platform=p) for p in ("cpu", "cuda")}
  variables = {p: m.init(jax.random.key(1), x) for p, m in forms.items()}
  assert jax.tree_util.tree_structure(variables["cpu"]) == jax.tree_util.tree_structure(
      variables["cuda"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables["cpu"], variables["cuda"])
  v = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape),
                             variables["cpu"])
  out = {p: jax.jit(m.apply)(v, x) for p, m in forms.items()}
  np.testing.assert_allclose(out["cpu"], out["cuda"], rtol=1e-5, atol=1e-5)
  grads = {p: jax.jit(jax.grad(_penalty(m), argnums=(0, 1)))(v, x) for p, m in forms.items()}
  # Float32 sums in another order: errors relative to the gradient's scale, not per element.
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
  jax.tree_util.tree_map(close, grads["cpu"], grads["cuda"])

  native = "stride = [2, 2]" if isinstance(layer, layers.StridedConv) else "lhs_dilate = [2, 2]"
  apply = jax.jit(layer.apply)
  assert native not in apply.lower(v, x).as_text()
  assert native in jax.export.export(apply, platforms=["cuda"])(v, x).mlir_module()
  np.testing.assert_array_equal(apply(v, x), out["cpu"])
