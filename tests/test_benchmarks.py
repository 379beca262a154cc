"""The benchmark scripts: the PyTorch reference equals the JAX code, and --quick runs work."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common
from tests.helpers import tiny_config

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# PyTorch next to JAX, and the scripts in subprocesses: all slow.
pytestmark = pytest.mark.slow


def test_torch_reference_matches_jax_step():
  """Same weights, same batch, same α_i: outputs, losses and the update agree."""
  config = tiny_config("SA1P-BS")
  config.train.n_critic = 2
  errors = common.check_equivalence(config, crop=32, batch=2)
  assert set(errors) == {"G eval", "G train", "D", "VGG", "step g_loss", "step d_loss",
                         "G after step (vs its change)"}
  for name, err in errors.items():
    assert np.isfinite(err) and err < 1e-4, (name, err)


def test_torch_reference_other_options_forward():
  """Skip-Net (no deep skips), max pooling, instance norm, a conditional critic."""
  config = tiny_config("A2-S")
  config.model.update(pool="max", norm="instance")
  config.critic.conditional = True
  # 40 x 40 is not a multiple of 32: exercises the reflect padding and the crop back.
  errors = common.check_equivalence(config, crop=40, batch=2, include_step=False)
  for name, err in errors.items():
    assert np.isfinite(err) and err < 1e-4, (name, err)


def _run(module: str, *args: str) -> str:
  # The figures of a --quick run are not looked at: compile with XLA's cheap settings.
  fast_compile = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", XLA_FLAGS=fast_compile)
  proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args],
                        capture_output=True, text=True, env=env, timeout=600, cwd=_ROOT)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc.stdout


def _table(out: str) -> list[list[str]]:
  lines = [line for line in out.splitlines() if line.startswith("| ")]
  rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
  assert len(rows) >= 2, out
  header = rows[0]
  assert all(len(r) == len(header) for r in rows), out
  return rows


def test_inference_quick_prints_a_table():
  out = _run("inference", "--quick", "--nocheck")
  assert re.search(r"^Device: CPU", out, re.M), out
  header, *rows = _table(out)
  assert header[:4] == ["size", "batch", "dtype", "impl"]
  assert [r[3] for r in rows] == ["JAX", "PyTorch eager"]
  for r in rows:
    assert r[0] == "64x64" and float(r[header.index("ms/image")]) > 0
  assert float(rows[1][header.index("JAX/PyTorch time")]) > 0


def test_train_step_quick_prints_a_table():
  out = _run("train_step", "--quick", "--nocheck")
  header, *rows = _table(out)
  assert header[:3] == ["scheme", "batch", "impl"]
  assert [r[2] for r in rows] == ["JAX", "PyTorch eager"]
  assert all(r[0] == "SA1P-BS" for r in rows)
  for r in rows:
    assert float(r[header.index("steps/s")]) > 0
  assert float(rows[0][header.index("compile s")]) > 0
  assert float(rows[1][header.index("JAX/PyTorch time")]) > 0


def test_bad_flag_is_reported():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.inference", "--no_such_flag"],
                        capture_output=True, text=True, env=env, timeout=300, cwd=_ROOT)
  assert proc.returncode != 0
  assert "no_such_flag" in proc.stderr


def test_export_quick_prints_a_table():
  out = _run("export", "--quick")
  header, *rows = _table(out)
  assert header[:3] == ["size", "padded", "impl"]
  assert [r[2] for r in rows] == ["JAX", "StableHLO", "ONNX"]
  for r in rows:
    assert r[0] == "64x64" and float(r[header.index("median ms")]) > 0
  for r in rows[1:]:
    assert float(r[header.index("max abs diff vs JAX")]) < 1e-4
