"""Runs notebooks/*.ipynb top to bottom in their smoke-test mode (BISKIP_NOTEBOOK_TINY=1).

Each notebook runs in a fresh Jupyter kernel of this interpreter (nbclient), on the CPU, with
its working directory in a temporary folder: its runs (``runs/quick_tiny``, ``runs/deblurred``)
land there, and the package is found through ``PYTHONPATH``, as after ``pip install -e .``.
The deblurring notebook reuses the tiny checkpoint of the quickstart notebook when both run
(they share the folder); alone, it trains its own first. Nothing touches the network.
"""

import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from biskip_jax.datasets import load_image, synthetic

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
jupyter_client = pytest.importorskip("jupyter_client")
kernelspec = pytest.importorskip("jupyter_client.kernelspec")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
_FLOAT = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """The notebooks' working directory, shared so that the second reuses the first's run."""
  return tmp_path_factory.mktemp("notebooks")


def _kernel_env(run_dir) -> dict[str, str]:
  env = dict(os.environ)
  env.update(
      BISKIP_NOTEBOOK_TINY="1",
      JAX_PLATFORMS="cpu",
      PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p]),
      IPYTHONDIR=str(run_dir / ".ipython"),  # No IPython history or profile in $HOME.
      MPLCONFIGDIR=str(run_dir / ".matplotlib"),
      # Compiling dominates a 4-step run: cheaper LLVM passes save about a quarter of it.
      XLA_FLAGS=" ".join(filter(None, [env.get("XLA_FLAGS"),
                                       "--xla_backend_optimization_level=0",
                                       "--xla_llvm_disable_expensive_passes=true"])),
  )
  return env


def _execute(name: str, run_dir) -> nbformat.NotebookNode:
  """Executes notebooks/NAME in ``run_dir``; fails the test with the cell's traceback."""
  nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
  # The kernel runs this interpreter, whatever kernel specs are (or are not) installed: with no
  # spec folders to search, jupyter_client uses ipykernel's built-in "python3" spec, whose
  # command is [sys.executable, "-m", "ipykernel_launcher", ...].
  km = jupyter_client.AsyncKernelManager(
      kernel_name="python3", kernel_spec_manager=kernelspec.KernelSpecManager(kernel_dirs=[]))
  assert km.kernel_spec.argv[0] == sys.executable, km.kernel_spec.argv
  client = nbclient.NotebookClient(nb, km=km, timeout=600,
                                   resources={"metadata": {"path": str(run_dir)}})
  try:
    client.execute(env=_kernel_env(run_dir), cleanup_kc=True)  # Shuts the kernel down.
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{name}: a cell raised:\n{e}", pytrace=False)
  return nb


def _stdout(nb) -> str:
  return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs if out.output_type == "stream")


def _num_pictures(nb) -> int:
  return sum("image/png" in out.get("data", {}) for cell in nb.cells
             if cell.cell_type == "code" for out in cell.outputs)


def test_notebooks_are_committed_without_outputs():
  assert {os.path.basename(p) for p in NOTEBOOKS} >= {"quickstart.ipynb",
                                                       "deblur_your_photo.ipynb"}
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3", path
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, (path, cell.source[:60])
    sources = "\n".join(c.source for c in nb.cells)
    assert 'os.environ.get("BISKIP_NOTEBOOK_TINY") == "1"' in sources, path
    assert '"google.colab" in sys.modules' in sources, path


@pytest.mark.parametrize("gpu", [False, True])
def test_setup_cell_installs_from_github_on_colab(monkeypatch, gpu):
  """The first code cell on Colab: pip installs the repository (+ jax[cuda12] with a GPU)."""
  calls = []
  monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: calls.append(cmd))
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: types.SimpleNamespace(
      returncode=0 if gpu else 1))
  monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    setup = next(c.source for c in nb.cells if c.cell_type == "code")
    calls.clear()
    namespace = {}
    exec(compile(setup, path, "exec"), namespace)  # pylint: disable=exec-used
    assert namespace["IN_COLAB"] and namespace["RUNS"] == "/content/runs"
    pip = [c[c.index("install") + 1:] for c in calls if c[1:3] == ["-m", "pip"]]
    assert len(pip) == len(calls) == (2 if gpu else 1), calls
    assert pip[0][-1] == "git+" + namespace["REPO_URL"]
    assert ("jax[cuda12]" in pip[-1]) == gpu


@pytest.mark.slow
def test_quickstart_notebook(run_dir):
  nb = _execute("quickstart.ipynb", run_dir)
  text = _stdout(nb)
  found = re.search(r"mean PSNR restored: " + _FLOAT + r" dB \| blurred input: " + _FLOAT, text)
  assert found, text[-2000:]
  psnr, blurred_psnr = float(found.group(1)), float(found.group(2))
  assert math.isfinite(psnr) and math.isfinite(blurred_psnr) and psnr > 5, text[-2000:]
  assert "finished at step 4" in text
  workdir = run_dir / "runs" / "quick_tiny"
  with open(workdir / "eval" / "metrics.json") as f:
    result = json.load(f)
  assert result["num_images"] == 2 and result["psnr"] == pytest.approx(psnr, abs=1e-3)
  assert len(os.listdir(workdir / "eval" / "restored")) == 2
  assert _num_pictures(nb) >= 3  # Loss curves and two blurred | restored | sharp figures.


@pytest.mark.slow
def test_deblur_your_photo_notebook(run_dir):
  nb = _execute("deblur_your_photo.ipynb", run_dir)
  text = _stdout(nb)
  found = re.search(r"restored \((\d+), (\d+), 3\) from input \((\d+), (\d+), 3\)", text)
  assert found, text[-2000:]
  assert found.group(1, 2) == found.group(3, 4)
  path, photo = synthetic.example_photo()
  name = os.path.splitext(os.path.basename(path))[0] if path else "camera_blurred"
  restored = load_image(run_dir / "runs" / "deblurred" / f"{name}.png")
  assert restored.shape == photo.shape and tuple(map(int, found.group(1, 2))) == photo.shape[:2]
  assert not np.all(restored == 0)
  similarity = re.search(r"saliency similarity \(input vs restored\): " + _FLOAT, text)
  assert similarity and math.isfinite(float(similarity.group(1))), text[-2000:]
  assert _num_pictures(nb) >= 2  # Before/after and the saliency maps.
