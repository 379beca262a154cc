"""Tests for the jit-compiled train step (Algorithm 1, DESIGN §6)."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biskip_jax.data import image_io
from biskip_jax.nn import conv, models, vgg
from biskip_jax.objective import losses as losses_lib
from biskip_jax.train import train_step
from configs import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batch(seed=0, n=2, size=32):
  rng = np.random.default_rng(seed)
  sharp = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  noise = rng.integers(-40, 41, sharp.shape)
  blur = np.clip(sharp.astype(int) + noise, 0, 255).astype(np.uint8)
  return {"blur": blur, "sharp": sharp}


def _setup(config, total_steps=100, total_epochs=10):
  mesh = train_step.make_mesh()
  state = train_step.replicate(train_step.create_train_state(config, total_steps, 32), mesh)
  return mesh, state, train_step.jit_train_step(config, total_epochs, mesh, state)


@pytest.fixture(scope="module")
def _adversarial_setup():
  return (tiny.get_config("SA1-BS"),) + _setup(tiny.get_config("SA1-BS"))


@pytest.fixture
def adversarial(_adversarial_setup):
  """(config, mesh, fresh state copy, jitted step): the step donates its state."""
  config, mesh, state, step = _adversarial_setup
  return config, mesh, jax.tree_util.tree_map(jnp.copy, state), step


@pytest.mark.slow
def test_step_compiles_once_and_updates_both_networks(adversarial):
  config, mesh, state, step = adversarial
  g0 = jax.device_get(state.gen.params)
  d0 = jax.device_get(state.critic.params)
  for i in range(3):
    state, m = step(state, train_step.shard_batch(_batch(i), mesh), {})
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 3 and int(state.skipped_steps) == 0
  assert int(state.critic.opt_state[1].count) == 3 * config.train.n_critic
  assert int(state.gen.opt_state[1].count) == 3
  changed = lambda a, b: any(not np.allclose(x, y) for x, y in zip(
      jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
  assert changed(g0, state.gen.params) and changed(d0, state.critic.params)
  expected = {"g_loss", "g_adv", "content", "pixel", "feature", "v_mean", "v_min", "lam", "q",
              "g_grad_norm", "finite", "d_loss", "gp", "wasserstein", "d_grad_norm"}
  assert expected <= set(m)
  per_sample = set(train_step.PER_SAMPLE_METRICS)
  assert all(np.isfinite(float(v)) or k == "lam" for k, v in m.items() if k not in per_sample)
  # Per-sample l_i and v_i of the global batch; their means are the scalar metrics.
  l_i, v_i = np.asarray(m["l_i"]), np.asarray(m["v_i"])
  assert l_i.shape == v_i.shape == (2,)
  assert np.mean(l_i) == pytest.approx(float(m["content"]), rel=1e-6)
  # First epoch: λ = ∞, every v_i = 1 (Algorithm 1, line 1).
  assert float(m["lam"]) == np.inf and float(m["v_mean"]) == 1.0
  assert float(m["gp"]) > 0 and float(m["feature"]) == 0.0
  # The SPL running max is the largest l_i seen.
  assert np.isfinite(float(state.spl.running_max))


@pytest.mark.slow
def test_self_paced_weights_after_first_epoch(adversarial):
  _, mesh, state, step = adversarial
  state = state.replace(spl=state.spl.replace(
      lam=jnp.asarray(50.0, jnp.float32), epoch=jnp.asarray(5, jnp.int32)))
  state = train_step.replicate(state, mesh)
  _, m = step(state, train_step.shard_batch(_batch(7), mesh), {})
  # Content losses are ~ γ1 * 0.1-0.5 here, so some weights are below 1, none above.
  assert 0.0 <= float(m["v_min"]) <= float(m["v_mean"]) < 1.0
  q = np.tan((1 - 5 / 22) * np.pi / 2)  # Eq. 10, t = 5, T = 10.
  assert float(m["q"]) == pytest.approx(q, rel=1e-5)
  # The step reports the v_i it used: eq. 11 of its own l_i with λ = 50.
  l_i = np.asarray(m["l_i"], np.float64)
  expected = np.where(l_i < 50.0, np.clip(1 - l_i / 50.0, 0, None) ** (1 / (q - 1)), 0.0)
  np.testing.assert_allclose(np.asarray(m["v_i"]), expected, rtol=1e-4, atol=1e-6)
  assert np.mean(expected) == pytest.approx(float(m["v_mean"]), rel=1e-4)


@pytest.mark.slow
def test_adversarial_weight_scales_the_critic_term():
  config = tiny.get_config("A1-BS")
  config.loss.gamma_adv = 0.25
  mesh, state, step = _setup(config)
  _, m = step(state, train_step.shard_batch(_batch(), mesh), {})
  # No self-paced weights (v_i = 1): eq. 13 with the critic term weighted.
  assert float(m["g_adv"]) != 0.0
  expected = float(m["content"]) + 0.25 * float(m["g_adv"])
  assert float(m["g_loss"]) == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_non_finite_step_is_not_applied():
  config = tiny.get_config("1-BS")
  config.loss.gamma1 = float("nan")
  mesh, state, step = _setup(config)
  before = jax.device_get(state.gen)
  state, m = step(state, train_step.shard_batch(_batch(), mesh), {})
  assert float(m["finite"]) == 0.0
  assert int(state.bad_steps) == 1 and int(state.skipped_steps) == 1 and int(state.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(state.gen)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_content_loss_falls_on_a_fixed_batch():
  config = tiny.get_config("1-BS")
  config.model.channels = (16, 32, 64, 64, 64)  # The quickstart model's width.
  config.model.skip_channels = (8, 16, 32, 32)
  config.optim.g_lr = 1e-3
  mesh, state, step = _setup(config, total_steps=1000)
  batch = train_step.shard_batch(_batch(3), mesh)
  losses = []
  for _ in range(30):
    state, m = step(state, batch, {})
    losses.append(float(m["content"]))
  assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
  # Without an adversarial term the critic is untouched.
  assert float(m["d_loss"]) == 0.0 and int(state.critic.opt_state[1].count) == 0


@pytest.mark.slow
def test_frequency_term_adds_to_the_content_loss():
  config = tiny.get_config("1-BS")
  config.loss.gamma_fft = 3.0
  mesh, state, step = _setup(config)
  batch = _batch(4)
  # Jitted: compiling the forward pass is faster than running it op by op the first time.
  restored = jax.jit(lambda v, x: state.gen.apply_fn(v, x, train=True, mutable=["batch_stats"]))(
      {"params": state.gen.params, "batch_stats": state.gen.batch_stats},
      image_io.to_model_range(batch["blur"]))[0]
  sharp = image_io.to_model_range(batch["sharp"])
  _, m = step(state, train_step.shard_batch(batch, mesh), {})
  fft = np.asarray(losses_lib.frequency_loss(restored, sharp))
  pixel = np.abs(np.asarray(restored) - np.asarray(sharp)).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(float(m["fft"]), fft.mean(), rtol=1e-4)
  np.testing.assert_allclose(float(m["content"]), (100.0 * pixel + 3.0 * fft).mean(), rtol=1e-4)


@pytest.mark.slow
def test_perceptual_term_uses_vgg_features():
  config = tiny.get_config("2P-BS")
  mesh, state, step = _setup(config)
  net = vgg.VGG19Features(layer=config.loss.vgg_layer)
  vgg_params = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  _, m = step(state, train_step.shard_batch(_batch(), mesh), vgg_params)
  assert float(m["feature"]) > 0 and float(m["pixel"]) > 0
  expected = config.loss.gamma1 * float(m["pixel"]) + config.loss.gamma2 * float(m["feature"])
  assert float(m["content"]) == pytest.approx(expected, rel=1e-5)


# bfloat16 keeps 8 significant bits (7 stored): each rounding is off by at most 2^-9
# relative. A loss is a mean over thousands of such values whose errors mostly cancel, so one
# step's losses in mixed precision agree with float32's to well within 2^-8 (measured: 2e-5 to
# 2e-4 for the tiny model); the gradient norm sums errors through the backward pass (1.7%).
_BF16_LOSS_RTOL = 2.0**-8
_BF16_GRAD_RTOL = 2.0**-4


@pytest.mark.slow
def test_bfloat16_mixed_precision_trains_with_float32_state(adversarial):
  """train.compute_dtype="bfloat16": bf16 convs; params, optimizer state and losses float32."""
  config, mesh, state, step32 = adversarial
  config16 = config.copy_and_resolve_references()
  config16.train.compute_dtype = "bfloat16"
  step16 = train_step.jit_train_step(config16, 10, mesh, state)
  batch = train_step.shard_batch(_batch(0), mesh)
  hlo = step16.lower(state, batch, {}).as_text()
  convs = [line for line in hlo.splitlines() if "convolution" in line]
  assert convs and sum("bf16" in line for line in convs) > len(convs) // 2

  _, m32 = step32(jax.tree_util.tree_map(jnp.copy, state), batch, {})
  state, m16 = step16(state, batch, {})
  for name in ("g_loss", "content", "d_loss", "gp"):
    assert m16[name].dtype == jnp.float32
    assert float(m16[name]) == pytest.approx(float(m32[name]), rel=_BF16_LOSS_RTOL), name
  assert float(m16["g_grad_norm"]) == pytest.approx(float(m32["g_grad_norm"]),
                                                     rel=_BF16_GRAD_RTOL)
  losses = [float(m16["content"])]
  for _ in range(4):
    state, m16 = step16(state, batch, {})
    assert float(m16["finite"]) == 1.0
    losses.append(float(m16["content"]))
  assert losses[-1] < 0.9 * losses[0], losses
  floats = {str(x.dtype) for x in jax.tree_util.tree_leaves((state.gen, state.critic))
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert floats == {"float32"}


def test_bfloat16_perceptual_loss_is_close_to_float32():
  """VGG19 in bf16: the feature term is differenced in float32 and stays close."""
  config = tiny.get_config("1P-BS")
  net = vgg.VGG19Features(layer=config.loss.vgg_layer)
  vgg_params = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(0)
  restored, sharp = (jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
                     for _ in range(2))
  values = {}
  for dtype in train_step.COMPUTE_DTYPES:
    config.train.compute_dtype = dtype
    fns = train_step.StepFns(config, 10)
    content = jax.jit(lambda r, x, f=fns: f.content(r, x, f.features(vgg_params, x),
                                                    vgg_params))
    loss, parts = content(restored, sharp)
    assert loss.dtype == parts["feature"].dtype == jnp.float32
    values[dtype] = np.asarray(parts["feature"])
  assert np.all(values["float32"] > 0)
  # Features of two random images differ by O(1): bf16 rounding of each feature is 2^-9.
  np.testing.assert_allclose(values["bfloat16"], values["float32"], rtol=_BF16_LOSS_RTOL * 4)


def test_learning_rate_schedule_holds_then_decays_to_zero():
  sched = train_step.learning_rate_schedule(1e-4, 100, 0.5)
  assert float(sched(0)) == pytest.approx(1e-4) and float(sched(50)) == pytest.approx(1e-4)
  assert float(sched(75)) == pytest.approx(5e-5) and float(sched(100)) == pytest.approx(0.0)


def test_critic_learns_at_the_generators_pace_for_the_whole_run():
  """Paper §5: both Adams hold lr for half the run, then decay linearly to 0 (per G step).

  Constant gradients make each Adam update exactly -lr_t * g / (|g| + eps): the step size
  read off the parameters is the learning rate of that update. The critic is stepped
  ``n_critic`` times per generator step, as in the train step.
  """
  config = tiny.get_config("SA1-BS")
  config.train.n_critic = 2  # The paper's D:G = 2:1 (the quickstart uses 1).
  config.optim.g_lr = config.optim.d_lr = 1e-4
  config.optim.decay_start = 0.5
  total = 20
  g_tx, d_tx = train_step.make_optimizers(config, total)
  p = jnp.zeros(())
  g_state, d_state = g_tx.init(p), d_tx.init(p)
  grad = jnp.ones(())
  for s in range(total):
    expected = 1e-4 if s < total // 2 else 1e-4 * (1 - (s - total // 2) / (total - total // 2))
    g_update, g_state = g_tx.update(grad, g_state)
    assert -float(g_update) == pytest.approx(expected, rel=1e-5, abs=1e-12), s
    for k in range(config.train.n_critic):
      d_update, d_state = d_tx.update(grad, d_state)
      assert -float(d_update) == pytest.approx(expected, rel=1e-5, abs=1e-12), (s, k)
  assert expected > 0  # The last step still learns (its rate is lr / (T / 2)).


@pytest.mark.slow
def test_four_devices_match_one_device():
  """Data parallel over 4 forced CPU devices gives the 1-device metrics and parameters."""
  code = textwrap.dedent("""
      import jax, numpy as np
      from biskip_jax.train import train_step
      from configs import tiny
      from tests.test_train_step import _batch
      assert jax.device_count() == 4
      config = tiny.get_config("SA1-BS")
      config.train.batch_size = 4
      results = []
      for devices in (jax.devices()[:1], jax.devices()):
        mesh = train_step.make_mesh(devices)
        state = train_step.replicate(train_step.create_train_state(config, 10, 32), mesh)
        step = train_step.jit_train_step(config, 10, mesh, state)
        batch = train_step.shard_batch(_batch(0, n=4), mesh)
        assert len(batch["blur"].sharding.device_set) == len(devices)
        metrics = []
        for _ in range(2):  # The second step's metrics depend on the first's update.
          state, m = step(state, batch, {})
          metrics.append(jax.device_get(m))
        results.append(metrics)
      for m1, m4 in zip(*results):
        for k in m1:
          np.testing.assert_allclose(m4[k], m1[k], rtol=2e-4, atol=1e-5, err_msg=k)
      print("OK")
  """)
  # XLA's default code generation (not conftest's cheaper one): the tolerance above is for the
  # two summation orders as it compiles them.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


@pytest.mark.slow
def test_step_is_compiled_with_conv_compiler_options(monkeypatch):
  """jit_train_step hands conv.compiler_options to XLA: an option XLA refuses fails the step."""
  bad = {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"}
  monkeypatch.setattr(conv, "compiler_options", lambda platform: bad)
  mesh, state, step = _setup(tiny.get_config("1-BS"))
  with pytest.raises(Exception, match="NOT_A_FUSION_TYPE"):
    step(state, train_step.shard_batch(_batch(0), mesh), {})


@pytest.mark.slow
def test_critic_loop_equals_the_updates_applied_by_hand():
  """n_critic = 2 in the step's fori_loop equals two critic updates written out (α_i from
  fold_in(key, 0) and fold_in(key, 1)), and the generator updates against the second critic."""
  config = tiny.get_config("SA1-BS")
  config.train.n_critic = 2
  # No norms: a bias before a norm has no true gradient, and Adam would scale its rounding
  # noise up to ±lr, making the two programs' parameters incomparable there.
  config.model.norm = config.critic.norm = "none"
  mesh, state, step = _setup(config)
  fns = train_step.StepFns(config, 10)
  batch = train_step.shard_batch(_batch(4), mesh)

  @jax.jit
  def by_hand(state, batch):
    b = image_io.to_model_range(batch["blur"])
    x = image_io.to_model_range(batch["sharp"])
    forward = train_step.generator_forward(fns, state.gen, b, x, {})
    weights = jnp.ones((b.shape[0],), jnp.float32)  # First epoch: λ = ∞, every v_i = 1.
    key = jax.random.fold_in(state.rng, state.step)
    fake = jax.lax.stop_gradient(forward.restored)
    critic, _ = train_step.critic_update(fns, state.critic, x, fake, b, weights,
                                         jax.random.fold_in(key, 0))
    critic, metrics = train_step.critic_update(fns, critic, x, fake, b, weights,
                                               jax.random.fold_in(key, 1))
    gen, _ = train_step.generator_update(fns, state.gen, forward, critic.params, weights, b)
    return critic, gen, metrics

  critic, gen, metrics = jax.device_get(by_hand(state, batch))
  before = jax.device_get((state.critic.params, state.gen.params))
  new_state, m = step(state, batch, {})  # Donates state: the reference and copy came first.
  new_state = jax.device_get(new_state)
  assert float(m["v_mean"]) == 1.0 and float(m["finite"]) == 1.0
  assert int(new_state.critic.opt_state[1].count) == int(critic.opt_state[1].count) == 2

  def same_update(new, ref, old, lr):
    # Adam divides each gradient by its own size, so an element with a small gradient turns
    # float32 rounding into a visible share of its step: compare each leaf's update as a
    # whole (relative L2), and no element by more than a tenth of one step (the lr).
    step_, ref_step = np.asarray(new, np.float64) - old, np.asarray(ref, np.float64) - old
    assert np.linalg.norm(step_ - ref_step) <= 1e-4 * np.linalg.norm(ref_step)
    np.testing.assert_allclose(new, ref, rtol=0, atol=0.1 * lr)

  jax.tree_util.tree_map(functools.partial(same_update, lr=config.optim.d_lr),
                         new_state.critic.params, critic.params, before[0])
  jax.tree_util.tree_map(functools.partial(same_update, lr=config.optim.g_lr),
                         new_state.gen.params, gen.params, before[1])
  for name, value in metrics.items():
    assert float(m[name]) == pytest.approx(float(value), rel=1e-5, abs=1e-7), name


def _lowered_text(config, platform=None, crop=32):
  """The train step's StableHLO (jitted without shardings) from abstract inputs: lowered for
  this host, or exported for ``platform``."""
  fn = jax.jit(functools.partial(train_step.train_step, fns=train_step.StepFns(config, 10)))
  args = train_step.abstract_step_inputs(config, 1, crop)
  if platform is None:
    return fn.lower(*args).as_text()
  exported = jax.export.export(fn, platforms=[platform])(*args)
  assert exported.platforms == (platform,)
  return exported.mlir_module()


@pytest.mark.slow
def test_critic_updates_are_one_loop_whatever_n_critic():
  """The step's program holds the critic update once: n_critic = 5 lowers to the same
  convolutions as n_critic = 1 (unrolled, the critic's would be five times as many)."""
  config = tiny.get_config("SA1-BS")
  counts = {}
  for n in (1, 5):
    config.train.n_critic = n
    text = _lowered_text(config)
    counts[n] = text.count("stablehlo.convolution")
  config.loss.adversarial = False
  generator_only = _lowered_text(config).count("stablehlo.convolution")
  assert counts[1] == counts[5] > generator_only


@pytest.mark.slow
@pytest.mark.parametrize("dtype", train_step.COMPUTE_DTYPES)
def test_paper_train_step_lowers_for_cuda(dtype):
  """The paper's SA1P-BS step exports for CUDA from a CPU host, so a GPU-only lowering error
  shows here; the GPU program holds native strided and transposed convs, the CPU one neither."""
  from configs import biskip  # pylint: disable=g-import-not-at-top
  config = biskip.get_config("SA1P-BS")
  config.train.compute_dtype = dtype
  cuda = _lowered_text(config, "cuda")
  convs = [line for line in cuda.splitlines() if "stablehlo.convolution" in line]
  assert any("stride = [2, 2]" in line for line in convs)  # The critic's 4x4 stride 2.
  assert any("lhs_dilate = [2, 2]" in line for line in convs)  # The generator's up-sampling.
  if dtype == "bfloat16":
    assert sum("bf16" in line for line in convs) > len(convs) // 2
  cpu = _lowered_text(config)
  assert "stride = [2, 2]" not in cpu and "lhs_dilate = [2, 2]" not in cpu


@pytest.mark.slow
def test_summary_images_are_blur_restored_sharp():
  """The jitted summary is [blur | G(blur) | sharp] in uint8, G at inference."""
  config = tiny.get_config("1-BS")
  state = train_step.create_train_state(config, 10, 32)
  batch = _batch(5)
  grid = np.asarray(jax.jit(train_step.summary_images)(state.gen, batch))
  assert grid.shape == (2, 32, 96, 3) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[:, :, :32], batch["blur"])
  np.testing.assert_array_equal(grid[:, :, 64:], batch["sharp"])
  generator = models.generator_from_config(config.model)
  restored = np.asarray(jax.jit(functools.partial(generator.apply, train=False))(
      {"params": state.gen.params, "batch_stats": state.gen.batch_stats},
      batch["blur"].astype(np.float32) / 127.5 - 1), np.float64)
  expected = np.clip(np.round((restored + 1) * 127.5), 0, 255)
  assert np.abs(grid[:, :, 32:64].astype(np.float64) - expected).max() <= 1
