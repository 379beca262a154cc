"""Training state and the jit-compiled Bi-Skip train step (paper §4.2–4.3, Algorithm 1).

One call of the step does, on a global batch of blurred/sharp pairs (DESIGN §6):

1. ``x̃ = G(b)`` once, keeping its VJP for the generator update (:func:`generator_forward`);
2. per-sample bi-level loss ``l_i`` (eq. 4) and self-paced weights ``v_i`` (eq. 11, with no
   gradient through ``v``);
3. ``n_critic`` critic updates on the batch (eq. 12: weighted WGAN loss + gradient penalty;
   :func:`critic_update` in a ``lax.fori_loop``, :func:`critic_updates`);
4. one generator update (eq. 13: ``-mean v_i D(x̃_i) + mean v_i l_i``) through the saved VJP
   (:func:`generator_update`);
5. the SPL running maximum of ``l_i`` for λ_{t+1} (Algorithm 1, line 10).

A step whose losses or gradients are not finite is not applied: the state is kept as it was
(except for the step counter and the bad-step counters) and the metrics report it.
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from biskip_jax.data import image_io
from biskip_jax.nn import conv, models, vgg
from biskip_jax.objective import losses, spl

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# Metrics that are [N] arrays (one value per sample of the global batch), not scalars.
PER_SAMPLE_LOSS = "l_i"
PER_SAMPLE_WEIGHT = "v_i"
PER_SAMPLE_METRICS = (PER_SAMPLE_LOSS, PER_SAMPLE_WEIGHT)


class GeneratorState(train_state.TrainState):
  """Generator parameters, optimizer state and batch-norm running statistics."""
  batch_stats: Any = None


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue bit-for-bit (besides the data iterator).

  Attributes:
    step: int32 scalar, generator updates done (including skipped non-finite steps).
    gen: generator state.
    critic: critic state.
    spl: self-paced state (λ_t, running max of l_i, epoch t).
    rng: typed PRNG key; step ``s`` uses ``fold_in(rng, s)``.
    bad_steps: int32 scalar, consecutive non-finite steps so far.
    skipped_steps: int32 scalar, non-finite steps skipped in the whole run.
  """
  step: jax.Array
  gen: GeneratorState
  critic: train_state.TrainState
  spl: spl.SPLState
  rng: jax.Array
  bad_steps: jax.Array
  skipped_steps: jax.Array


def learning_rate_schedule(lr: float, total_steps: int, decay_start: float) -> optax.Schedule:
  """Constant ``lr`` for the first ``decay_start`` of training, then linear to zero (§5)."""
  total_steps = max(int(total_steps), 1)
  hold = int(round(total_steps * decay_start))
  return optax.join_schedules(
      [optax.constant_schedule(lr),
       optax.linear_schedule(lr, 0.0, max(total_steps - hold, 1))], [hold])


def learning_rates(config: ml_collections.ConfigDict,
                   total_steps: int) -> tuple[optax.Schedule, optax.Schedule]:
  """The generator's and the critic's learning rate as functions of the generator step.

  ``(g, d)``: generator step ``s`` (0-based) updates G with rate ``g(s)``, and each of its
  ``train.n_critic`` critic updates uses ``d(s)`` (§5; see :func:`make_optimizers`).
  """
  o = config.optim
  return (learning_rate_schedule(o.g_lr, total_steps, o.decay_start),
          learning_rate_schedule(o.d_lr, total_steps, o.decay_start))


def make_optimizers(config: ml_collections.ConfigDict,
                    total_steps: int) -> tuple[optax.GradientTransformation,
                                               optax.GradientTransformation]:
  """Adam for the generator and the critic with the paper's schedule (§5, DESIGN §6).

  Both rates are held for the first ``optim.decay_start`` of the run and fall linearly to zero
  over the rest, counted in generator steps. The critic's Adam is stepped
  ``train.n_critic`` times per generator step, so its schedule reads its own update count
  divided by ``n_critic``: during generator step ``s`` every critic update uses the rate of
  step ``s``.

  Args:
    config: the run configuration (``optim``, ``train.n_critic``).
    total_steps: generator updates of the whole run.

  Returns:
    (generator optimizer, critic optimizer).
  """
  o = config.optim
  n_critic = max(int(config.train.n_critic), 1)
  g_schedule, d_per_g_step = learning_rates(config, total_steps)
  d_schedule = lambda count: d_per_g_step(count // n_critic)
  g = optax.adam(g_schedule, b1=o.b1, b2=o.b2)
  d = optax.adam(d_schedule, b1=o.b1, b2=o.b2)
  return g, d


def make_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The run's base PRNG key (``config.train.seed``, ``config.rng_impl``)."""
  return jax.random.key(config.train.seed, impl=config.rng_impl)


def create_train_state(config: ml_collections.ConfigDict, total_steps: int,
                       crop_size: int | None = None) -> TrainState:
  """Initialises both networks (Xavier, paper §5), optimizers and SPL state.

  Args:
    config: the run configuration.
    total_steps: generator updates of the whole run (sets the lr schedule).
    crop_size: spatial size used for shape inference at init (parameters do not depend on it).

  Returns:
    A fresh :class:`TrainState` on the default device.
  """
  generator = models.generator_from_config(config.model)
  critic = models.critic_from_config(config.critic)
  key = make_key(config)
  g_key, d_key, run_key = jax.random.split(key, 3)
  size = crop_size or 64
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  g_tx, d_tx = make_optimizers(config, total_steps)

  @jax.jit
  def init(g_key, d_key):
    g_vars = generator.init(g_key, x, train=False)
    d_args = (x, x) if config.critic.conditional else (x,)
    d_vars = critic.init(d_key, *d_args)
    return g_vars, d_vars

  g_vars, d_vars = init(g_key, d_key)
  gen = GeneratorState.create(apply_fn=generator.apply, params=g_vars["params"], tx=g_tx,
                              batch_stats=g_vars.get("batch_stats", {}))
  crit = train_state.TrainState.create(apply_fn=critic.apply, params=d_vars["params"],
                                       tx=d_tx)
  zero = lambda: jnp.zeros((), jnp.int32)  # Distinct buffers: the state is donated.
  return TrainState(step=zero(), gen=gen, critic=crit, spl=spl.init_state(), rng=run_key,
                    bad_steps=zero(), skipped_steps=zero())


def abstract_step_inputs(config: ml_collections.ConfigDict, batch_size: int,
                         crop_size: int) -> tuple[TrainState, Batch, Any]:
  """Shapes and dtypes (``jax.ShapeDtypeStruct``) of :func:`train_step`'s arguments
  ``(state, batch, vgg_params)`` for a batch of ``[batch_size, crop_size, crop_size, 3]``.

  Enough to lower, compile or export the step (``jax.jit(...).lower(*args)``): nothing is
  initialised, allocated or downloaded.
  """
  state = jax.eval_shape(lambda: create_train_state(config, 1000, crop_size))
  images = jax.ShapeDtypeStruct((batch_size, crop_size, crop_size, 3), jnp.uint8)
  vgg_params = {}
  if config.loss.perceptual:
    net = vgg.VGG19Features(layer=config.loss.vgg_layer)
    vgg_params = jax.eval_shape(net.init, jax.random.key(0),
                                jnp.zeros((1, crop_size, crop_size, 3)))
  return state, {"blur": images, "sharp": images}, vgg_params


COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(config: ml_collections.ConfigDict) -> str:
  """The train step's compute dtype, ``config.train.compute_dtype`` (one of
  :data:`COMPUTE_DTYPES`, as ``config_checks`` validates it).

  Mixed precision (``"bfloat16"``): the generator, the critic and VGG19 run their convs and
  activations in bfloat16, while parameters, optimizer state, batch-norm statistics, norm
  reductions, losses, the gradient penalty's norms and the SPL weights stay float32.
  """
  return config.train.compute_dtype


@dataclasses.dataclass(frozen=True)
class StepFns:
  """The pieces of the objective, built once from the config (pure functions).

  The three networks compute in :func:`compute_dtype`; ``config.model.dtype`` is the dtype of
  inference (validation, ``evaluate.py``, ``deblur.py``) and does not apply here.
  """
  config: ml_collections.ConfigDict
  total_epochs: int

  @functools.cached_property
  def dtype(self) -> str:
    return compute_dtype(self.config)

  @functools.cached_property
  def generator(self) -> models.BiSkip:
    return models.generator_from_config(self.config.model, self.dtype)

  @functools.cached_property
  def critic(self) -> models.Critic:
    return models.critic_from_config(self.config.critic, self.dtype)

  @functools.cached_property
  def vgg(self) -> vgg.VGG19Features:
    return vgg.VGG19Features(layer=self.config.loss.vgg_layer, dtype=jnp.dtype(self.dtype))

  def features(self, vgg_params: Any, images: jax.Array) -> jax.Array:
    """VGG19 features F (eq. 4) of [N, H, W, 3] images in [-1, 1]."""
    return self.vgg.apply(vgg_params, vgg.normalize_input(images, self.config.loss.vgg_input))

  def content(self, restored: jax.Array, sharp: jax.Array, sharp_features: jax.Array | None,
              vgg_params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-sample loss l_i (eq. 4 without v, plus ``loss.gamma_fft`` times the frequency
    term when set) -> ([N], parts)."""
    lc = self.config.loss
    n = restored.shape[0]
    pixel = losses.pixel_loss(restored, sharp, lc.pixel)
    if lc.perceptual:
      feature = losses.feature_loss(self.features(vgg_params, restored), sharp_features)
    else:
      feature = jnp.zeros((n,), jnp.float32)
    content = losses.bilevel_loss(pixel, feature, lc.gamma1, lc.gamma2)
    parts = dict(pixel=pixel, feature=feature)
    if lc.gamma_fft > 0:
      parts["fft"] = losses.frequency_loss(restored, sharp)
      content = content + lc.gamma_fft * parts["fft"]
    return content, parts

  def score(self, critic_params: Any, images: jax.Array, blurred: jax.Array) -> jax.Array:
    """Critic scores D(images) -> [N] (conditioned on ``blurred`` if configured)."""
    args = (images, blurred) if self.config.critic.conditional else (images,)
    return self.critic.apply({"params": critic_params}, *args)


class GeneratorForward(NamedTuple):
  """``x̃ = G(b)`` once per step, with the VJPs that the generator update pulls back through.

  Attributes:
    restored: [N, H, W, 3] float32, x̃ (batch norm on batch statistics).
    content: [N] float32, the per-sample loss l_i (eq. 4, plus any frequency term).
    parts: [N] per-sample terms of l_i by name ("pixel", "feature", "fft" when set).
    batch_stats: the generator's batch-norm statistics updated by this forward pass.
    g_vjp: ``dx̃ -> (d params,)``, the generator's VJP.
    content_vjp: ``dl -> (dx̃,)``, the content loss's VJP (VGG19 is not run a second time).
  """
  restored: jax.Array
  content: jax.Array
  parts: dict[str, jax.Array]
  batch_stats: Any
  g_vjp: Callable[[jax.Array], tuple[Any]]
  content_vjp: Callable[[jax.Array], tuple[jax.Array]]


def generator_forward(fns: StepFns, gen: GeneratorState, blurred: jax.Array, sharp: jax.Array,
                      vgg_params: Any) -> GeneratorForward:
  """Steps 1–2 of Algorithm 1's update: x̃ = G(b) and l_i (eq. 4), each with its VJP.

  Args:
    fns: the objective's building blocks.
    gen: the generator state.
    blurred, sharp: [N, H, W, 3] float32 in [-1, 1].
    vgg_params: VGG19 parameters (ignored unless ``config.loss.perceptual``).
  """
  def g_forward(params):
    out, mutated = fns.generator.apply(
        {"params": params, "batch_stats": gen.batch_stats}, blurred, train=True,
        mutable=["batch_stats"])
    return out, mutated.get("batch_stats", {})

  restored, g_vjp, batch_stats = jax.vjp(g_forward, gen.params, has_aux=True)
  sharp_features = (jax.lax.stop_gradient(fns.features(vgg_params, sharp))
                    if fns.config.loss.perceptual else None)
  content, content_vjp, parts = jax.vjp(
      lambda r: fns.content(r, sharp, sharp_features, vgg_params), restored, has_aux=True)
  return GeneratorForward(restored, content, parts, batch_stats, g_vjp, content_vjp)


_CRITIC_METRICS = ("d_loss", "gp", "wasserstein", "d_grad_norm")


def critic_update(fns: StepFns, critic: train_state.TrainState, sharp: jax.Array,
                  fake: jax.Array, blurred: jax.Array, weights: jax.Array,
                  key: jax.Array) -> tuple[train_state.TrainState, Metrics]:
  """One critic update (eq. 12): Adam on the weighted WGAN loss with gradient penalty.

  Args:
    fns: the objective's building blocks.
    critic: the critic state.
    sharp: [N, H, W, 3] real images x in [-1, 1].
    fake: [N, H, W, 3] restored images x̃ (no gradient flows into the generator).
    blurred: [N, H, W, 3] inputs b (the critic's condition, if conditional).
    weights: [N] self-paced weights v_i (eq. 11).
    key: draws the penalty's interpolation factors α_i (eq. 7).

  Returns:
    ``(critic, metrics)``: float32 scalars ``d_loss``, ``gp`` (mean penalty),
    ``wasserstein`` and ``d_grad_norm`` of this update's gradient.
  """
  lc = fns.config.loss

  def d_loss_fn(params):
    d_real = fns.score(params, sharp, blurred)
    d_fake = fns.score(params, fake, blurred)
    gp = losses.gradient_penalty(lambda z: fns.score(params, z, blurred), sharp, fake, key)
    loss = losses.critic_loss(d_real, d_fake, gp, weights, lc.gp_weight)
    return loss, dict(d_loss=loss, gp=jnp.mean(gp),
                      wasserstein=losses.wasserstein_estimate(d_real, d_fake))

  grads, metrics = jax.grad(d_loss_fn, has_aux=True)(critic.params)
  metrics["d_grad_norm"] = optax.tree.norm(grads)
  metrics = {k: jnp.asarray(metrics[k], jnp.float32) for k in _CRITIC_METRICS}
  return critic.apply_gradients(grads=grads), metrics


def critic_updates(fns: StepFns, critic: train_state.TrainState, sharp: jax.Array,
                   fake: jax.Array, blurred: jax.Array, weights: jax.Array, key: jax.Array,
                   num_updates: int) -> tuple[train_state.TrainState, Metrics, jax.Array]:
  """``num_updates`` :func:`critic_update` s on one batch (Algorithm 1's ``n_critic``).

  Update ``k`` (0-based) draws its α_i from ``fold_in(key, k)``. The updates run in a
  ``lax.fori_loop``: the critic's program is compiled once, whatever ``num_updates`` is.

  Returns:
    ``(critic, metrics, finite)``: the metrics of the last update, and whether every update's
    loss and gradient were finite.
  """
  def body(k, carry):
    critic_, _, finite = carry
    critic_, metrics = critic_update(fns, critic_, sharp, fake, blurred, weights,
                                     jax.random.fold_in(key, k))
    # A non-finite element makes the global norm non-finite (one reduction, not one per
    # leaf: per-leaf checks multiply XLA's compile time).
    finite = finite & jnp.isfinite(metrics["d_grad_norm"]) & jnp.isfinite(metrics["d_loss"])
    return critic_, metrics, finite

  zeros = {k: jnp.zeros((), jnp.float32) for k in _CRITIC_METRICS}
  return jax.lax.fori_loop(0, num_updates, body, (critic, zeros, jnp.array(True)))


def generator_update(fns: StepFns, gen: GeneratorState, forward: GeneratorForward,
                     critic_params: Any, weights: jax.Array,
                     blurred: jax.Array) -> tuple[GeneratorState, Metrics]:
  """The generator update (eq. 13: ``-mean v_i D(x̃_i) + mean v_i l_i``) through the VJPs of
  :func:`generator_forward`, against the critic after its updates.

  Returns:
    ``(gen, metrics)``: ``gen`` with the Adam update and the forward pass's batch statistics;
    float32 scalars ``g_loss``, ``g_adv`` (the adversarial term) and ``g_grad_norm``.
  """
  lc = fns.config.loss
  n = forward.restored.shape[0]

  def g_loss_fn(restored, content):
    d_fake = fns.score(critic_params, restored, blurred) if lc.adversarial else jnp.zeros((n,))
    loss = losses.generator_loss(d_fake, content, weights, lc.adversarial, lc.gamma_adv)
    adv = -jnp.mean(weights * d_fake) if lc.adversarial else jnp.zeros(())
    return loss, adv

  (g_loss, g_adv), (d_restored, d_content) = jax.value_and_grad(
      g_loss_fn, argnums=(0, 1), has_aux=True)(forward.restored, forward.content)
  (d_restored_content,) = forward.content_vjp(d_content)
  (g_grads,) = forward.g_vjp(d_restored + d_restored_content)
  gen = gen.apply_gradients(grads=g_grads, batch_stats=forward.batch_stats)
  return gen, dict(g_loss=g_loss, g_adv=g_adv, g_grad_norm=optax.tree.norm(g_grads))


def train_step(state: TrainState, batch: Batch, vgg_params: Any, *,
               fns: StepFns) -> tuple[TrainState, Metrics]:
  """One Bi-Skip training step (Algorithm 1, lines 5–10). Pure; jit it with shardings.

  Args:
    state: the current :class:`TrainState`.
    batch: ``{"blur": uint8 [N, H, W, 3], "sharp": uint8 [N, H, W, 3]}``.
    vgg_params: VGG19 parameters (ignored unless ``config.loss.perceptual``).
    fns: the objective's building blocks.

  Returns:
    ``(new_state, metrics)``; metrics are float32 scalars, except the [N] arrays of
    :data:`PER_SAMPLE_METRICS`.
  """
  lc = fns.config.loss
  b = image_io.to_model_range(batch["blur"])
  x = image_io.to_model_range(batch["sharp"])
  n = x.shape[0]
  key = jax.random.fold_in(state.rng, state.step)

  # 1–2. x̃ = G(b) once (batch statistics updated here), l_i (eq. 4), and the self-paced
  # weights v_i (eq. 11) with no gradient through v.
  forward = generator_forward(fns, state.gen, b, x, vgg_params)
  q = spl.q_schedule(state.spl.epoch, fns.total_epochs)
  if lc.self_paced:
    weights = jax.lax.stop_gradient(spl.spl_weights(forward.content, state.spl.lam, q))
  else:
    weights = jnp.ones((n,), jnp.float32)

  # 3. n_critic critic updates (eq. 12) on this batch, x̃ held fixed.
  critic, d_finite = state.critic, jnp.array(True)
  d_metrics = {k: jnp.zeros((), jnp.float32) for k in _CRITIC_METRICS}
  if lc.adversarial:
    critic, d_metrics, d_finite = critic_updates(
        fns, critic, x, jax.lax.stop_gradient(forward.restored), b, weights, key,
        fns.config.train.n_critic)

  # 4. Generator update (eq. 13) through the saved VJPs.
  gen, g_metrics = generator_update(fns, state.gen, forward, critic.params, weights, b)

  finite = (d_finite & jnp.isfinite(g_metrics["g_loss"])
            & jnp.all(jnp.isfinite(forward.content)) & jnp.isfinite(g_metrics["g_grad_norm"]))
  new_spl = spl.observe(state.spl, forward.content)
  # One conditional for the whole update (a per-leaf select would compile hundreds of tiny
  # kernels): a non-finite step leaves networks, optimizers and SPL state untouched.
  gen, critic, new_spl = jax.lax.cond(
      finite, lambda: (gen, critic, new_spl), lambda: (state.gen, state.critic, state.spl))

  new_state = state.replace(
      step=state.step + 1, gen=gen, critic=critic, spl=new_spl,
      bad_steps=jnp.where(finite, 0, state.bad_steps + 1),
      skipped_steps=state.skipped_steps + jnp.where(finite, 0, 1))
  parts = forward.parts
  metrics = dict(
      g_loss=g_metrics["g_loss"], g_adv=g_metrics["g_adv"], content=jnp.mean(forward.content),
      pixel=jnp.mean(parts["pixel"]), feature=jnp.mean(parts["feature"]),
      **({"fft": jnp.mean(parts["fft"])} if "fft" in parts else {}),
      v_mean=jnp.mean(weights), v_min=jnp.min(weights), lam=state.spl.lam, q=jnp.asarray(q),
      g_grad_norm=g_metrics["g_grad_norm"], finite=finite.astype(jnp.float32), **d_metrics)
  # Per sample, [N] over the global batch: l_i (eq. 4) and the v_i (eq. 11) this step used.
  metrics.update({PER_SAMPLE_LOSS: forward.content, PER_SAMPLE_WEIGHT: weights})
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def summary_images(gen: GeneratorState, batch: Batch) -> jax.Array:
  """Blurred | restored | sharp side by side: uint8 [N, H, 3W, 3].

  The generator runs as at inference (running statistics, ``config.model.dtype``). Pure; jit
  it (:func:`jit_summary_images`).

  Args:
    gen: the generator state.
    batch: ``{"blur": uint8 [N, H, W, 3], "sharp": uint8 [N, H, W, 3]}``.
  """
  restored = gen.apply_fn({"params": gen.params, "batch_stats": gen.batch_stats},
                          image_io.to_model_range(batch["blur"]))
  return jnp.concatenate([batch["blur"], image_io.from_model_range(restored), batch["sharp"]],
                         axis=2)


def jit_summary_images(mesh: Mesh) -> Callable[[GeneratorState, Batch], jax.Array]:
  """:func:`summary_images` jitted for programs on ``mesh`` (compiled once per run)."""
  return jax.jit(summary_images,
                 compiler_options=conv.compiler_options(mesh.devices.flat[0].platform))


def make_mesh(devices: Any = None) -> Mesh:
  """A 1-D ``data`` mesh over all (or the given) devices."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices).reshape(-1), ("data",))


def jit_train_step(config: ml_collections.ConfigDict, total_epochs: int, mesh: Mesh,
                   state: TrainState) -> Callable[[TrainState, Batch, Any],
                                                  tuple[TrainState, Metrics]]:
  """Returns the train step jitted data-parallel over ``mesh`` (batch sharded on ``data``).

  Parameters and optimizer state are replicated; the input state is donated.
  """
  replicated = NamedSharding(mesh, P())
  state_sharding = jax.tree_util.tree_map(lambda _: replicated, state)
  batch_sharding = NamedSharding(mesh, P("data"))
  fn = functools.partial(train_step, fns=StepFns(config, total_epochs))
  return jax.jit(fn, in_shardings=(state_sharding, batch_sharding, replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=0,
                 compiler_options=conv.compiler_options(mesh.devices.flat[0].platform))


def _identity(tree: Any) -> Any:
  return tree


def replicate(state: TrainState, mesh: Mesh) -> TrainState:
  """Places ``state`` replicated on ``mesh``, as the jitted step returns it.

  Calling the step with the same shardings it outputs keeps it at one compilation. The mesh
  may span several processes: each process passes its own copy of the same values (the same
  seed or checkpoint) and fills its own devices, as ``device_put`` cannot place data on
  another process's devices.
  """
  replicated = NamedSharding(mesh, P())
  if jax.process_count() == 1:  # Also onto a mesh of devices the state is not on.
    return jax.device_put(state, replicated)
  return jax.jit(_identity, out_shardings=replicated)(state)


def shard_batch(batch: dict[str, Any], mesh: Mesh) -> Batch:
  """Places a host batch (global, this process's part) on the mesh, split along ``data``."""
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items() if k in ("blur", "sharp")}
