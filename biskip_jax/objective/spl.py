"""Self-paced learning (paper §2.2, §4.3, eq. 9–11, Algorithm 1; DESIGN §5).

The dynamic self-paced regulariser of eq. 9, ``f(v, λ; t) = λ (‖v‖_q^q / q − Σ_i v_i)``
(read, as in Li & Gong's dynamic SPL which the paper adopts, as ``λ Σ_i (v_i^q / q − v_i)``
so that it separates over the samples), added to the weighted bi-level loss ``Σ_i v_i l_i``
(eq. 8) and minimised over ``v_i ∈ [0, 1]``, has the closed form of eq. 11:

    v_i = (1 − l_i/λ)^(1/(q−1))   if l_i < λ,   else 0.

The "age" ``λ`` starts at ∞ (every ``v_i = 1`` in the first epoch) and becomes the largest
bi-level loss seen during the previous epoch (Algorithm 1, line 10). ``q(t)`` (eq. 10)
decreases over the epochs from about ``4(T+1)/π`` towards 1, so the weights of hard samples
fall more steeply as training goes on.

All functions are pure and jit-compatible; the λ bookkeeping is explicit state
(:class:`SPLState`) that the train state carries and the checkpoint saves.
"""

import math
import numbers

import flax
import jax
import jax.numpy as jnp
import numpy as np

# Lower bound on q − 1 in eq. 11, so 1/(q − 1) stays finite (it is ~ 1e12 there) if a caller
# passes q ≤ 1 (t > T in eq. 10, or float32 rounding for astronomically large T).
_MIN_Q_MINUS_1 = 1e-12


def _is_concrete_number(x) -> bool:
  """True for Python and NumPy scalars (not for JAX arrays, traced or not)."""
  return isinstance(x, (numbers.Real, np.integer, np.floating)) and not isinstance(x, bool)


def q_schedule(epoch: int | float | jax.Array,
               total_epochs: int | float | jax.Array) -> float | jax.Array:
  """The dynamic SPL exponent of eq. 10: ``q(t) = tan((1 − t/(2(T+1))) · π/2)``.

  Evaluated as the equal ``cot(π t / (4(T+1)))``, which keeps float32 accurate near the pole
  of tan at t → 0. For ``1 ≤ t ≤ T`` the value is ``> 1`` and strictly decreasing in t
  (e.g. T = 300: ``q(1) ≈ 383.244``, ``q(300) ≈ 1.00523``); at ``t = T + 1`` it reaches 1,
  where eq. 11 is undefined (:func:`spl_weights` still returns finite weights).

  Args:
    epoch: t, the 1-based epoch index; a Python/NumPy number or a (possibly traced) JAX
      scalar.
    total_epochs: T, the number of epochs; a number or a JAX scalar.

  Returns:
    q(t): a Python float when both arguments are concrete numbers, else a float32 JAX
    scalar (so it may be called inside ``jax.jit`` with ``epoch`` traced).

  Raises:
    ValueError: if concrete arguments have ``epoch < 1`` or ``total_epochs < 1``.
  """
  if _is_concrete_number(epoch) and _is_concrete_number(total_epochs):
    if epoch < 1 or total_epochs < 1:
      raise ValueError(
          f"q_schedule needs epoch >= 1 (1-based) and total_epochs >= 1, got epoch={epoch}, "
          f"total_epochs={total_epochs}")
    return 1.0 / math.tan(math.pi * float(epoch) / (4.0 * (float(total_epochs) + 1.0)))
  t = jnp.asarray(epoch, jnp.float32)
  big_t = jnp.asarray(total_epochs, jnp.float32)
  return 1.0 / jnp.tan(jnp.pi * t / (4.0 * (big_t + 1.0)))


def spl_weights(losses: jax.Array, lam: float | jax.Array, q: float | jax.Array) -> jax.Array:
  """Self-paced weights of eq. 11, elementwise.

  ``v = (1 − l/λ)^(1/(q−1))`` where ``l < λ``, else 0. This is the minimiser over
  ``v ∈ [0, 1]`` of ``v·l + λ (v^q/q − v)`` (eq. 8–9 for one sample): it decreases in l,
  increases in λ, tends to 1 as l → 0 and is 0 for ``l ≥ λ``.

  Computed as ``exp(log1p(−l/λ) / (q − 1))`` on a guarded ratio, so that:
  ``λ = +∞`` gives exactly 1 for every finite l (the first epoch of Algorithm 1); ``l = 0``
  gives exactly 1; ``l ≥ λ`` gives exactly 0; ``l < 0`` (not produced by eq. 4) gives 1, the
  minimiser over [0, 1]; and neither the values nor their gradients (w.r.t. l, λ or q)
  contain NaN. Non-finite l (NaN, ±∞) gives 0. The caller applies ``stop_gradient``: the
  weights are constants of eq. 12–13.

  Args:
    losses: [...] bi-level losses l_i (eq. 4), e.g. [N].
    lam: λ_t, a scalar > 0 or ``+inf``.
    q: q(t) > 1 (eq. 10), a scalar. ``q − 1`` is floored at 1e-12, so q ≤ 1 (t > T)
      gives finite weights (≈ 0 for l > 0) instead of NaN.

  Returns:
    float32 weights in [0, 1] with the shape of ``losses``.
  """
  losses = jnp.asarray(losses, jnp.float32)
  lam = jnp.asarray(lam, jnp.float32)
  q = jnp.asarray(q, jnp.float32)
  finite_lam = jnp.isfinite(lam) & (lam > 0)
  safe_losses = jnp.where(jnp.isfinite(losses), losses, 0.0)
  # l/λ, floored at 0; exactly 0 for λ = ∞. Where eq. 11 gives 0 (l ≥ λ, or l/λ rounding up
  # to 1) the ratio is replaced by 0 so that log1p and its gradient stay finite.
  ratio = jnp.where(finite_lam, jnp.maximum(safe_losses / jnp.where(finite_lam, lam, 1.0), 0.0),
                    0.0)
  active = jnp.isfinite(losses) & (losses < lam) & (ratio < 1.0)
  safe_ratio = jnp.where(active, ratio, 0.0)
  exponent = 1.0 / jnp.maximum(q - 1.0, _MIN_Q_MINUS_1)
  v = jnp.exp(exponent * jnp.log1p(-safe_ratio))
  return jnp.where(active, v, 0.0).astype(jnp.float32)


@flax.struct.dataclass
class SPLState:
  """The λ bookkeeping of Algorithm 1 as explicit state (checkpointed with the train state).

  Attributes:
    lam: float32 scalar, λ_t of the current epoch (``+inf`` in epoch 1).
    running_max: float32 scalar, the largest finite l_i observed so far in epoch t; ``-inf``
      until the first observation (so "nothing observed" is distinguishable from a loss of 0).
    epoch: int32 scalar, t (1-based).
  """
  lam: jax.Array
  running_max: jax.Array
  epoch: jax.Array


def init_state() -> SPLState:
  """State at the start of training: λ_1 = ∞ (Algorithm 1, line 1), nothing observed, t = 1."""
  return SPLState(lam=jnp.array(jnp.inf, jnp.float32),
                  running_max=jnp.array(-jnp.inf, jnp.float32),
                  epoch=jnp.array(1, jnp.int32))


def observe(state: SPLState, losses: jax.Array) -> SPLState:
  """Folds a batch's bi-level losses into the running maximum of epoch t.

  Non-finite losses are ignored (a diverged step must not set λ to ∞ or NaN); an empty batch
  leaves the state unchanged.

  Args:
    state: the current state.
    losses: [N] bi-level losses l_i of the batch (eq. 4), computed with the generator before
      the step's updates.

  Returns:
    The state with ``running_max = max(running_max, max_i l_i)``.
  """
  losses = jnp.asarray(losses, jnp.float32)
  finite = jnp.where(jnp.isfinite(losses), losses, -jnp.inf)
  batch_max = jnp.max(finite, initial=-jnp.inf)
  return state.replace(running_max=jnp.maximum(state.running_max, batch_max))


def end_epoch(state: SPLState) -> SPLState:
  """Closes epoch t: ``λ_{t+1} = max{l_i}`` of epoch t (Algorithm 1, line 10), t ← t + 1.

  The running maximum is reset to ``-inf``. If no loss was observed during the epoch, λ is
  kept.

  Args:
    state: the state at the end of epoch t.

  Returns:
    The state at the start of epoch t + 1.
  """
  seen = jnp.isfinite(state.running_max)
  return SPLState(lam=jnp.where(seen, state.running_max, state.lam).astype(jnp.float32),
                  running_max=jnp.array(-jnp.inf, jnp.float32),
                  epoch=(state.epoch + 1).astype(jnp.int32))
