"""Tests of biskip_jax.objective.spl: eq. 10–11 against hand values and the SPL objective, and
state."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from biskip_jax.objective import spl

# One compiled version for the value tests (eager dispatch of every op is slow on CPU); the
# eager path is checked against it below.
_weights = jax.jit(spl.spl_weights)


def _spl_objective(v: float, loss: float, lam: float, q: float) -> float:
  """One sample of eq. 8–9: v·l + λ (v^q/q − v)."""
  return v * loss + lam * (v**q / q - v)


# ----------------------------------------------------------------------------- q(t), eq. 10


def test_q_schedule_hand_values():
  # T = 300: q(1) = tan((1 − 1/602)·π/2) = cot(π/1204); q(300) = cot(300π/1204).
  assert spl.q_schedule(1, 300) == pytest.approx(383.24423319948, rel=1e-12)
  assert spl.q_schedule(300, 300) == pytest.approx(1.00523225683030, rel=1e-12)
  assert spl.q_schedule(150, 300) == pytest.approx(2.42315041038223, rel=1e-12)
  # T = 1: q(1) = tan(3π/8) = 1 + √2.
  assert spl.q_schedule(1, 1) == pytest.approx(1 + math.sqrt(2), rel=1e-12)
  assert isinstance(spl.q_schedule(3, 10), float)


@pytest.mark.parametrize("total", [1, 2, 300, 1000])
def test_q_schedule_matches_eq10_greater_than_one_and_decreasing(total):
  qs = [spl.q_schedule(t, total) for t in range(1, total + 1)]
  ref = [math.tan((1 - t / (2 * (total + 1))) * math.pi / 2) for t in range(1, total + 1)]
  np.testing.assert_allclose(qs, ref, rtol=1e-9)
  assert min(qs) > 1.0
  assert all(a > b for a, b in zip(qs, qs[1:]))


def test_q_schedule_traced_matches_python():
  epochs = jnp.arange(1, 301, dtype=jnp.int32)
  q_jit = jax.jit(jax.vmap(lambda t: spl.q_schedule(t, 300)))(epochs)
  assert q_jit.dtype == jnp.float32
  ref = np.array([spl.q_schedule(t, 300) for t in range(1, 301)])
  np.testing.assert_allclose(np.asarray(q_jit), ref, rtol=2e-6)
  # Traced total_epochs too.
  q = jax.jit(spl.q_schedule)(jnp.int32(7), jnp.int32(20))
  assert float(q) == pytest.approx(spl.q_schedule(7, 20), rel=2e-6)


@pytest.mark.parametrize("epoch,total", [(0, 10), (-1, 10), (1, 0), (3, -5)])
def test_q_schedule_rejects_bad_python_ints(epoch, total):
  with pytest.raises(ValueError, match="epoch"):
    spl.q_schedule(epoch, total)


# ----------------------------------------------------------------------------- v, eq. 11


@pytest.mark.parametrize("loss,lam,q", [
    (0.3, 1.0, 2.0),
    (0.5, 2.0, 1.5),
    (1.7, 2.0, 3.0),
    (0.1, 0.25, 1.2),
    (4.0, 10.0, 7.0),
    (0.9, 1.0, 1.05),
    (2.0, 2.5, 383.2),
    (3.0, 2.0, 2.0),   # l ≥ λ: v = 0.
    (0.0, 1.0, 2.5),   # l = 0: v = 1.
])
def test_weights_minimise_the_spl_objective(loss, lam, q):
  v = float(_weights(jnp.array([loss]), lam, q)[0])
  res = optimize.minimize_scalar(_spl_objective, bounds=(0.0, 1.0), method="bounded",
                                 args=(loss, lam, q), options={"xatol": 1e-10})
  # Compare against the bounded optimum, and also against the endpoints, which the bounded
  # search only approaches.
  candidates = [res.x, 0.0, 1.0]
  best = min(candidates, key=lambda c: _spl_objective(c, loss, lam, q))
  assert v == pytest.approx(best, abs=1e-4)
  assert _spl_objective(v, loss, lam, q) <= _spl_objective(best, loss, lam, q) + 1e-6
  if loss < lam:
    assert v == pytest.approx((1 - loss / lam) ** (1 / (q - 1)), rel=1e-5)


def test_weights_against_dense_grid():
  grid = np.linspace(0.0, 1.0, 200001)
  for loss, lam, q in [(0.2, 1.0, 2.0), (1.0, 3.0, 1.4), (5.0, 6.0, 4.0)]:
    v = float(_weights(jnp.array([loss]), lam, q)[0])
    best = grid[np.argmin(_spl_objective(grid, loss, lam, q))]
    assert v == pytest.approx(best, abs=1e-4)


def test_weights_properties_of_section_2_2():
  losses = jnp.linspace(0.0, 2.0, 41)
  v = np.asarray(_weights(losses, 1.5, 2.5))
  assert v.dtype == np.float32 and v.shape == (41,)
  assert v[0] == 1.0  # l = 0.
  assert np.all((v >= 0) & (v <= 1))
  assert np.all(np.diff(v) <= 0)  # Decreasing in l...
  assert np.all(np.diff(v[np.asarray(losses) < 1.5]) < 0)  # ...strictly where positive.
  np.testing.assert_array_equal(v[np.asarray(losses) >= 1.5], 0.0)  # l ≥ λ.
  # Increasing in λ for fixed l.
  lams = jnp.linspace(0.6, 10.0, 30)
  by_lam = np.asarray(jax.vmap(lambda lam: _weights(jnp.array([0.5]), lam, 2.5)[0])(lams))
  assert np.all(np.diff(by_lam) > 0)
  # v → 1 as l → 0.
  small = np.asarray(_weights(jnp.array([1e-2, 1e-4, 1e-6]), 1.0, 1.5))
  assert np.all(np.diff(small) > 0) and 1.0 - small[-1] < 1e-5


def test_weights_boundary_cases_exact_and_nan_free():
  losses = jnp.array([0.0, 0.5, 1.0, 1.0 + 1e-7, 3.0, 1e30], jnp.float32)
  v = np.asarray(_weights(losses, 1.0, 2.0))
  np.testing.assert_array_equal(v, [1.0, 0.5, 0.0, 0.0, 0.0, 0.0])  # l = λ gives 0.
  # λ = ∞ gives exactly ones, for any q > 1 (including the first epoch's huge q).
  for q in (1.0001, 2.0, spl.q_schedule(1, 1000)):
    np.testing.assert_array_equal(np.asarray(_weights(losses, jnp.inf, q)), 1.0)
  # Non-finite and negative inputs, q ≤ 1: finite weights in [0, 1].
  odd = jnp.array([jnp.nan, jnp.inf, -jnp.inf, -1.0, 0.0, 0.5])
  for lam in (jnp.inf, 1.0, 0.0, 1e-30):
    for q in (0.5, 1.0, 1.0 + 1e-7, 2.0, 1e8):
      w = np.asarray(_weights(odd, lam, q))
      assert np.all(np.isfinite(w)) and np.all((w >= 0) & (w <= 1)), (lam, q, w)


def test_weights_gradients_are_finite():
  """v is used under stop_gradient, but its own gradients must not be NaN either."""
  def total(losses, lam, q):
    return jnp.sum(spl.spl_weights(losses, lam, q))

  grad_fn = jax.jit(jax.grad(total, argnums=(0, 1, 2)))
  losses = jnp.array([0.0, 0.3, 1.0, 2.0, 1.0 - 1e-7], jnp.float32)
  for lam in (jnp.float32(jnp.inf), jnp.float32(1.0)):
    for q in (jnp.float32(1.01), jnp.float32(2.0), jnp.float32(383.0)):
      grads = grad_fn(losses, lam, q)
      for g in grads:
        assert np.all(np.isfinite(np.asarray(g))), (lam, q, grads)
  # Under λ = ∞ the weights do not depend on l at all.
  g_l, _, _ = grad_fn(losses, jnp.float32(jnp.inf), jnp.float32(2.0))
  np.testing.assert_array_equal(np.asarray(g_l), 0.0)
  # d v / d l = −v^(2−q)/(λ(q−1)) for q = 2: −1/λ.
  g_l, _, _ = grad_fn(jnp.array([0.25]), jnp.float32(1.0), jnp.float32(2.0))
  assert float(g_l[0]) == pytest.approx(-1.0, rel=1e-5)


def test_weights_eager_matches_jit_and_keeps_shape():
  losses = jnp.asarray(np.abs(np.random.default_rng(0).normal(size=(3, 5))), jnp.float32)
  eager = spl.spl_weights(losses, 1.2, 1.7)
  jitted = _weights(losses, jnp.float32(1.2), jnp.float32(1.7))
  assert eager.shape == jitted.shape == (3, 5)
  np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-6)


# ----------------------------------------------------------------------------- state


def test_init_state():
  state = spl.init_state()
  assert float(state.lam) == math.inf and state.lam.dtype == jnp.float32
  assert float(state.running_max) == -math.inf and state.running_max.dtype == jnp.float32
  assert int(state.epoch) == 1 and state.epoch.dtype == jnp.int32
  # First epoch: every weight is one.
  np.testing.assert_array_equal(np.asarray(spl.spl_weights(jnp.array([0.0, 5.0, 1e6]),
                                                           state.lam, 50.0)), 1.0)


def _run_two_epochs(observe, end_epoch):
  state = spl.init_state()
  state = observe(state, jnp.array([0.5, 2.0, 1.0]))
  state = observe(state, jnp.array([3.5, 0.1]))
  state = observe(state, jnp.array([1.0]))
  after_1 = end_epoch(state)
  state = observe(after_1, jnp.array([0.7, 0.2]))
  state = observe(state, jnp.array([0.9]))
  after_2 = end_epoch(state)
  after_3 = end_epoch(after_2)  # Nothing observed in epoch 3: λ kept.
  return after_1, after_2, after_3


@pytest.mark.parametrize("jit", [False, True])
def test_observe_and_end_epoch(jit):
  observe = jax.jit(spl.observe) if jit else spl.observe
  end_epoch = jax.jit(spl.end_epoch) if jit else spl.end_epoch
  after_1, after_2, after_3 = _run_two_epochs(observe, end_epoch)
  assert float(after_1.lam) == 3.5  # λ_2 = max l_i of epoch 1.
  assert float(after_1.running_max) == -math.inf
  assert int(after_1.epoch) == 2
  assert float(after_2.lam) == pytest.approx(0.9)  # λ_3 = max of epoch 2 only.
  assert int(after_2.epoch) == 3
  assert float(after_3.lam) == pytest.approx(0.9) and int(after_3.epoch) == 4
  for s in (after_1, after_2, after_3):
    assert s.lam.dtype == jnp.float32 and s.epoch.dtype == jnp.int32


def test_observe_ignores_non_finite_and_empty():
  state = spl.observe(spl.init_state(), jnp.array([0.4, jnp.nan, jnp.inf, 0.6]))
  assert float(state.running_max) == pytest.approx(0.6)
  state = spl.observe(state, jnp.zeros((0,)))
  assert float(state.running_max) == pytest.approx(0.6)
  assert float(spl.end_epoch(state).lam) == pytest.approx(0.6)


def test_state_is_a_pytree_usable_inside_jit():
  @jax.jit
  def step(state, losses):
    q = spl.q_schedule(state.epoch, 10)
    v = spl.spl_weights(losses, state.lam, q)
    return spl.observe(state, losses), v

  state = spl.init_state()
  state, v = step(state, jnp.array([1.0, 2.0]))
  np.testing.assert_array_equal(np.asarray(v), 1.0)
  state = spl.end_epoch(state)
  _, v = step(state, jnp.array([1.0, 2.0]))
  q2 = spl.q_schedule(2, 10)
  np.testing.assert_allclose(np.asarray(v), [0.5 ** (1 / (q2 - 1)), 0.0], rtol=1e-5)
  leaves = jax.tree_util.tree_leaves(state)
  assert len(leaves) == 3
