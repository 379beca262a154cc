"""The benchmark scripts: the PyTorch reference equals the JAX code, and --quick runs work."""

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

from benchmarks import common
from configs import tiny

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# PyTorch next to JAX, and the scripts in subprocesses: all slow.
pytestmark = pytest.mark.slow


def test_torch_reference_matches_jax_step():
  """Same weights, same batch, same α_i: outputs, losses and the update agree."""
  config = tiny.get_config("SA1P-BS")
  config.train.n_critic = 2
  errors = common.check_equivalence(config, crop=32, batch=2)
  assert set(errors) == {"G eval", "G train", "D", "VGG", "step g_loss", "step d_loss",
                         "G after step (vs its change)"}
  for name, err in errors.items():
    assert np.isfinite(err) and err < 1e-4, (name, err)


def test_torch_reference_other_options_forward():
  """Skip-Net (no deep skips), max pooling, instance norm, a conditional critic."""
  config = tiny.get_config("A2-S")
  config.model.update(pool="max", norm="instance")
  config.critic.conditional = True
  # 40 x 40 is not a multiple of 32: exercises the reflect padding and the crop back.
  errors = common.check_equivalence(config, crop=40, batch=2, include_step=False)
  for name, err in errors.items():
    assert np.isfinite(err) and err < 1e-4, (name, err)


def _run(module: str, *args: str) -> str:
  # The figures of a --quick run are not looked at: it inherits conftest's cheap XLA settings.
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
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


def _wheel_of_installed(package: str, dest: str) -> str:
  """A pure-Python wheel of an installed package, made from its files (no network).

  A stand-in for what ``benchmarks/wheelhouse.py`` downloads: gpu_run unpacks wheels onto
  ``PYTHONPATH``, so the package's files (and a dist-info folder) are all a wheel needs here.
  """
  module = importlib.import_module(package)
  pkg_dir = os.path.dirname(module.__file__)
  version = importlib.metadata.version(package)
  path = os.path.join(dest, f"{package}-{version}-py3-none-any.whl")
  with zipfile.ZipFile(path, "w") as z:
    for folder, _, files in os.walk(pkg_dir):
      for name in files:
        if not name.endswith(".pyc"):
          full = os.path.join(folder, name)
          z.write(full, os.path.relpath(full, os.path.dirname(pkg_dir)))
    z.writestr(f"{package}-{version}.dist-info/METADATA",
               f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
  return path


def test_gpu_script_runs_end_to_end_tiny_with_a_missing_package(tmp_path):
  """bash benchmarks/gpu.sh --tiny on CPU: ml_collections hidden, unpacked from a wheelhouse.

  It runs every part the GPU run has (the torch.compile ones are skipped with --tiny), writes
  the report a device call brings back (at most 8 files), and keeps the profiler trace.
  """
  shadow = tmp_path / "shadow" / "ml_collections"
  shadow.mkdir(parents=True)
  (shadow / "__init__.py").write_text("raise ImportError('hidden: a GPU machine lacks it')\n")
  wheelhouse = tmp_path / "whl"
  wheelhouse.mkdir()
  _wheel_of_installed("ml_collections", str(wheelhouse))
  out = tmp_path / "out"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHON=sys.executable,
             PYTHONPATH=str(tmp_path / "shadow"))
  env.pop("OUT", None)
  proc = subprocess.run(["bash", "benchmarks/gpu.sh", str(out), "--tiny",
                         f"--wheelhouse={wheelhouse}"], capture_output=True, text=True,
                        env=env, timeout=1200, cwd=_ROOT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "not importable: ml_collections" in proc.stdout
  assert "unpacked from" in proc.stdout and "ml_collections-" in proc.stdout
  files = sorted(os.listdir(out))
  assert files == ["log.txt", "results.json", "results.md", "trace_train_step.tar.gz"]
  with tarfile.open(out / "trace_train_step.tar.gz") as tar:
    assert any(n.endswith(".xplane.pb") for n in tar.getnames())
  summary = json.loads((out / "results.json").read_text())
  assert summary["tiny"] and summary["env"]["missing"] == {}
  statuses = {name: part["status"] for name, part in summary["parts"].items()}
  assert statuses == {"inference": "ok", "train_step": "ok", "train_step_bf16": "ok",
                      "mixed_precision": "ok", "inference_compile": "skipped (--tiny)",
                      "train_step_compile": "skipped (--tiny)"}
  # The tables of the benchmarks' --quick runs: the JAX row, then PyTorch's, positive figures.
  parts = summary["parts"]
  inference = parts["inference"]["table"]
  assert inference["device"].startswith("CPU") and inference["check"]["G eval"] < 1e-4
  assert inference["header"][:4] == ["size", "batch", "dtype", "impl"]
  assert [r[2:4] for r in inference["rows"]] == [
      ["float32", "JAX"], ["float32", "PyTorch eager"], ["bfloat16", "JAX"],
      ["bfloat16", "PyTorch eager"], ["bfloat16", "JAX"], ["bfloat16", "PyTorch eager"]]
  for row in inference["rows"]:
    assert float(row[inference["header"].index("ms/image")]) > 0
  assert float(inference["rows"][1][inference["header"].index("JAX/PyTorch time")]) > 0
  step = parts["train_step"]["table"]
  assert step["header"][:3] == ["scheme", "batch", "impl"]
  assert [[r[0], r[2]] for r in step["rows"]] == [
      ["SA1P-BS", "JAX"], ["SA1P-BS", "PyTorch eager"]]
  assert all(float(r[step["header"].index("steps/s")]) > 0 for r in step["rows"])
  assert float(step["rows"][0][step["header"].index("compile s")]) > 0
  assert float(step["rows"][1][step["header"].index("JAX/PyTorch time")]) > 0
  assert [r[:3] for r in parts["train_step_bf16"]["table"]["rows"]] == [
      ["SA1P-BS bfloat16", "1", "JAX"], ["SA1P-BS bfloat16", "1", "PyTorch eager"]]
  mp = parts["mixed_precision"]["table"]
  assert [r[0] for r in mp["rows"]] == ["float32", "bfloat16"]
  assert all(np.isfinite(float(r[mp["header"].index("held-out PSNR")])) for r in mp["rows"])
  md = (out / "results.md").read_text()
  for name in statuses:
    assert f"## {name}: " in md
  assert "| SA1P-BS | 1 | JAX |" in md and "## Targets" in md


def test_gpu_script_stops_on_a_missing_package_without_a_wheel(tmp_path):
  shadow = tmp_path / "shadow" / "ml_collections"
  shadow.mkdir(parents=True)
  (shadow / "__init__.py").write_text("raise ImportError('hidden')\n")
  env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_run", f"--out={tmp_path / 'o'}",
                         f"--wheelhouse={tmp_path / 'none'}"], capture_output=True, text=True,
                        env=env, timeout=300, cwd=_ROOT)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert "error: still not importable: ml_collections" in proc.stdout
  assert "benchmarks.wheelhouse" in proc.stdout
  assert os.path.exists(tmp_path / "o" / "results.md")


def _tiny_training_data(folder) -> None:
  """frames/ (one sequence of 12 frames) and photos/ (3 photos), as benchmarks.gpu_data
  writes them."""
  from biskip_jax.data.datasets import save_image
  rng = np.random.default_rng(0)
  scene = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
  for t in range(12):
    save_image(folder / "frames" / "seq" / f"{t:06d}.png", scene[:, t:t + 56])
  for k in range(3):
    save_image(folder / "photos" / f"p{k}.png", rng.integers(0, 256, (60, 70, 3), np.uint8))


@pytest.mark.slow
def test_gpu_training_script_dry_run_writes_a_small_float16_model(tmp_path):
  """bash benchmarks/gpu_train.sh --tiny: unpacks a hidden package, trains until the deadline
  minus its margin, stops by SIGTERM with a checkpoint, exports the generator in float16."""
  shadow = tmp_path / "shadow" / "ml_collections"
  shadow.mkdir(parents=True)
  (shadow / "__init__.py").write_text("raise ImportError('hidden: a GPU machine lacks it')\n")
  wheelhouse = tmp_path / "whl"
  wheelhouse.mkdir()
  _wheel_of_installed("ml_collections", str(wheelhouse))
  _tiny_training_data(tmp_path / "data")
  out = tmp_path / "out"
  env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(tmp_path / "shadow"))
  env.pop("OUT", None)
  proc = subprocess.run(["bash", "benchmarks/gpu_train.sh", str(out), "--tiny",
                         "--budget_s=90", "--margin_s=35", f"--data={tmp_path / 'data'}",
                         f"--wheelhouse={wheelhouse}"], capture_output=True, text=True,
                        env=env, timeout=400, cwd=_ROOT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "unpacked from" in proc.stdout and "ml_collections-" in proc.stdout
  assert sorted(os.listdir(out)) == ["biskip_gpu.json", "biskip_gpu.npz", "metrics.jsonl",
                                     "summary.json", "train_log.txt"]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["train_exit"] == 143  # Stopped by the deadline's SIGTERM, checkpoint saved.
  assert summary["seconds"] <= 90 + 5
  with np.load(out / "biskip_gpu.npz") as z:
    assert {z[k].dtype for k in z.files} == {np.dtype(np.float16)}
  # The float16 file loads (as float32) wherever a --ckpt is taken.
  from biskip_jax.inference import loading
  config, variables, step = loading.load_generator(str(out / "biskip_gpu.npz"))
  assert step > 0 and tuple(config.model.channels) == (4, 8, 8, 8, 8)
  assert variables["params"]["out"]["kernel"].dtype == np.float32
  steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert max(steps) == step


def test_gpu_data_subset_is_bounded(tmp_path):
  from benchmarks import gpu_data
  _tiny_training_data(tmp_path / "src")
  got = gpu_data.build(str(tmp_path / "src" / "frames"), str(tmp_path / "src" / "photos"),
                       str(tmp_path / "out"), num_frames=5, photo_every=2, max_mb=1.0)
  assert got["frames"] == 5 and got["photos"] == 2
  assert sorted(os.listdir(tmp_path / "out" / "frames" / "seq")) == [
      f"{t:06d}.png" for t in range(5)]
  sizes = [os.path.getsize(tmp_path / "src" / "frames" / "seq" / f"{t:06d}.png")
           for t in range(3)]
  tight = gpu_data.build(str(tmp_path / "src" / "frames"), str(tmp_path / "src" / "photos"),
                         str(tmp_path / "out2"), num_frames=12, max_mb=(sum(sizes) + 1) / 2**20)
  assert tight == {"frames": 3, "photos": 0, "bytes": sum(sizes)}
