"""Runs notebooks/*.ipynb top to bottom in their smoke-test mode (BISKIP_NOTEBOOK_TINY=1).

Each notebook runs in a fresh Jupyter kernel of this interpreter (nbclient), on the CPU, with
its working directory in a temporary folder: its runs (``runs/quick_tiny``, ``runs/deblurred``)
land there, and the package is found through ``PYTHONPATH``, as after ``pip install -e .``.
The deblurring notebook reuses the tiny checkpoint of the quickstart notebook when both run
(they share the folder); alone, it trains its own first. The GoPro notebook trains on a tiny
fake GoPro tree, with random VGG19 weights in its cache. Nothing touches the network.

The install cell (each notebook's first code cell, the same in all) is run here with Colab and
pip faked, one test per source it installs from; ``tests/test_install.py`` runs it for real
against a freshly built wheel.
"""

import glob
import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types

import numpy as np
import pytest

from biskip_jax.data.datasets import gopro, load_image, synthetic
from biskip_jax.objective import schemes
from configs import biskip, quickstart
from tests.test_datasets import make_gopro

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
  )
  return env


def _set_params(source: str, params: dict[str, object]) -> str:
  """``source`` with its Colab form fields (``NAME = ...  #@param ...``) set as a user would."""
  for name, value in params.items():
    field = f"{name} = {value!r}"
    source, n = re.subn(rf"^{name} = .*?(?=  #@param)", lambda _, f=field: f, source,
                        flags=re.M)
    assert n == 1, f"no form field {name}"
  return source


def _install_cell(path: str) -> str:
  nb = nbformat.read(path, as_version=4)
  return next(c.source for c in nb.cells if c.cell_type == "code")


def _execute(name: str, run_dir, params: dict[str, object] | None = None,
             env: dict[str, str] | None = None) -> nbformat.NotebookNode:
  """Executes notebooks/NAME in ``run_dir``; fails the test with the cell's traceback.

  ``params``: form fields to fill in (each in exactly one cell); ``env``: added to the kernel's.
  """
  nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
  for name_value in (params or {}).items():
    cells = [c for c in nb.cells if c.cell_type == "code"
             and re.search(rf"^{name_value[0]} = .*#@param", c.source, flags=re.M)]
    assert len(cells) == 1, name_value
    cells[0].source = _set_params(cells[0].source, dict([name_value]))
  # The kernel runs this interpreter, whatever kernel specs are (or are not) installed: with no
  # spec folders to search, jupyter_client uses ipykernel's built-in "python3" spec, whose
  # command is [sys.executable, "-m", "ipykernel_launcher", ...].
  km = jupyter_client.AsyncKernelManager(
      kernel_name="python3", kernel_spec_manager=kernelspec.KernelSpecManager(kernel_dirs=[]))
  assert km.kernel_spec.argv[0] == sys.executable, km.kernel_spec.argv
  client = nbclient.NotebookClient(nb, km=km, timeout=600,
                                   resources={"metadata": {"path": str(run_dir)}})
  try:
    client.execute(env={**_kernel_env(run_dir), **(env or {})},
                   cleanup_kc=True)  # Shuts the kernel down.
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
                                                       "deblur_your_photo.ipynb",
                                                       "train_on_gopro.ipynb"}
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
    # No URL of a public home the project does not have, and no badge pointing there.
    assert "github.com/biskip-jax" not in sources and "colab-badge" not in sources, path


def test_notebooks_share_one_install_cell():
  """One install cell, copied into every notebook: a fix to one must reach all."""
  cells = {os.path.basename(p): _install_cell(p) for p in NOTEBOOKS}
  assert len(set(cells.values())) == 1, sorted(cells)


class _Colab:
  """A stand-in for ``google.colab``: Drive mounts and uploads are recorded, not done."""

  def __init__(self, upload: dict[str, bytes] | None = None):
    self.mounted: list[str] = []
    self.drive = types.SimpleNamespace(mount=self.mounted.append)
    self.files = types.SimpleNamespace(upload=lambda: self._upload(upload or {}))

  @staticmethod
  def _upload(files: dict[str, bytes]) -> dict[str, bytes]:
    for name, data in files.items():  # Colab writes uploads to the working directory.
      with open(name, "wb") as f:
        f.write(data)
    return files


def _run_install_cell(monkeypatch, tmp_path, *, colab: _Colab | None, gpu: bool = False,
                      params: dict[str, object] | None = None) -> tuple[dict, list[list[str]]]:
  """Runs the install cell in this process, pip faked; returns its names and pip's calls."""
  calls: list[list[str]] = []
  if colab is not None:
    module = types.ModuleType("google.colab")
    module.drive, module.files = colab.drive, colab.files
    monkeypatch.setitem(sys.modules, "google.colab", module)
  else:
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
  monkeypatch.delitem(sys.modules, "biskip_jax", raising=False)  # As in a fresh kernel.
  monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: calls.append(cmd))
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: types.SimpleNamespace(
      returncode=0 if gpu else 1))
  monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
  monkeypatch.setattr(sys, "path", list(sys.path))
  source = _install_cell(NOTEBOOKS[0]).replace('COLAB = "/content"', f"COLAB = {str(tmp_path)!r}")
  namespace: dict = {}
  exec(compile(_set_params(source, params or {}), "install cell", "exec"),  # pylint: disable=exec-used
       namespace)
  assert all(c[:3] == [sys.executable, "-m", "pip"] for c in calls), calls
  return namespace, [c[3:] for c in calls]


def _installed(calls: list[list[str]]) -> str:
  """What the (one) ``pip install`` call installed."""
  installs = [c for c in calls if c[0] == "install"]
  assert len(installs) == 1 and installs[0][1] == "-q", calls
  return installs[0][-1]


@pytest.mark.parametrize("gpu", [False, True])
def test_install_cell_takes_the_wheel_in_package(monkeypatch, tmp_path, gpu):
  wheel = tmp_path / "elsewhere" / "biskip_jax-0.1.0-py3-none-any.whl"
  wheel.parent.mkdir()
  wheel.write_bytes(b"PK")
  (tmp_path / "biskip_jax-0.0.9-py3-none-any.whl").write_bytes(b"PK")  # Uploaded: not taken.
  namespace, calls = _run_install_cell(monkeypatch, tmp_path, colab=_Colab(), gpu=gpu,
                                       params={"PACKAGE": str(wheel),
                                               "REPO_URL": "https://example.org/x.git"})
  # On a GPU runtime the package's cuda12 extra: jax[cuda12] at the pinned jax version.
  assert _installed(calls) == str(wheel) + ("[cuda12]" if gpu else "")
  assert namespace["IN_COLAB"] and namespace["RUNS"] == str(tmp_path / "runs")
  assert [c for c in calls if c[0] == "uninstall"] in ([], [["uninstall", "-y", "-q",
                                                             "biskip-jax"]])


def test_install_cell_finds_the_newest_upload_or_drive_copy(monkeypatch, tmp_path):
  colab = _Colab()
  drive = tmp_path / "drive" / "MyDrive"
  drive.mkdir(parents=True)
  uploaded = tmp_path / "biskip-jax-main.zip"
  uploaded.write_bytes(b"PK")
  newest = drive / "biskip_jax-0.1.0-py3-none-any.whl"
  newest.write_bytes(b"PK")
  os.utime(uploaded, (1, 1))
  _, calls = _run_install_cell(monkeypatch, tmp_path, colab=colab,
                               params={"MOUNT_DRIVE": True})
  assert colab.mounted == [str(tmp_path / "drive")]
  assert _installed(calls) == str(newest)
  newest.unlink()
  _, calls = _run_install_cell(monkeypatch, tmp_path, colab=colab)
  assert _installed(calls) == str(uploaded)


@pytest.mark.parametrize("url", ["https://example.org/me/biskip-jax.git",
                                 "git+ssh://git@example.org/me/biskip-jax.git@v1"])
def test_install_cell_installs_the_git_url_typed_in(monkeypatch, tmp_path, url):
  monkeypatch.chdir(tmp_path)
  _, calls = _run_install_cell(monkeypatch, tmp_path, colab=_Colab(), gpu=True,
                               params={"REPO_URL": url})
  git = url if url.startswith("git+") else "git+" + url
  assert _installed(calls) == f"biskip-jax[cuda12] @ {git}"


def test_install_cell_on_colab_installs_its_checkout_or_asks_for_the_wheel(monkeypatch, tmp_path):
  monkeypatch.chdir(os.path.join(ROOT, "notebooks"))  # Run from a checkout.
  _, calls = _run_install_cell(monkeypatch, tmp_path, colab=_Colab())
  assert _installed(calls) == ROOT
  # Nothing anywhere: the file picker; the upload is installed.
  work = tmp_path / "work"
  work.mkdir()
  monkeypatch.chdir(work)
  colab = _Colab(upload={"biskip_jax-0.1.0-py3-none-any.whl": b"PK"})
  _, calls = _run_install_cell(monkeypatch, tmp_path, colab=colab)
  assert _installed(calls) == str(work / "biskip_jax-0.1.0-py3-none-any.whl")
  with pytest.raises(RuntimeError, match="Nothing to install"):
    _run_install_cell(monkeypatch, tmp_path, colab=_Colab(upload={}))


def test_install_cell_locally_uses_the_checkout_without_installing(monkeypatch, tmp_path):
  monkeypatch.chdir(os.path.join(ROOT, "notebooks"))
  monkeypatch.setattr(sys, "path", [p for p in sys.path if p and os.path.abspath(p) != ROOT])
  namespace, calls = _run_install_cell(monkeypatch, tmp_path, colab=None)
  assert calls == [] and not namespace["IN_COLAB"]
  assert sys.path[0] == ROOT and namespace["RUNS"] == os.path.join(ROOT, "runs")


def test_install_cell_names_a_missing_package_and_asks_for_a_restart(monkeypatch, tmp_path):
  missing = tmp_path / "biskip_jax-0.1.0-py3-none-any.whl"
  with pytest.raises(FileNotFoundError, match=re.escape(repr(str(missing)))):
    _run_install_cell(monkeypatch, tmp_path, colab=_Colab(), params={"PACKAGE": str(missing)})
  missing.write_bytes(b"PK")
  # The install changed numpy, which this kernel had loaded: restart, not a silent mix.
  real = importlib.metadata.version
  monkeypatch.setattr(importlib.metadata, "version",
                      lambda dist: "0.0.1" if dist == "numpy" else real(dist))
  with pytest.raises(RuntimeError, match=r"restart the session.*numpy"):
    _run_install_cell(monkeypatch, tmp_path, colab=_Colab(), params={"PACKAGE": str(missing)})


def _markdown(name: str) -> str:
  """The notebook's markdown, white space collapsed (line breaks fall anywhere)."""
  nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
  return " ".join(" ".join(c.source for c in nb.cells if c.cell_type == "markdown").split())


def test_notebook_text_matches_the_configs():
  text = _markdown("quickstart.ipynb")
  config = quickstart.get_config()
  steps = config.train.num_epochs * config.train.steps_per_epoch
  assert f"Training is {steps} steps" in text
  crop = config.data.crop_size
  assert f"{config.train.batch_size} random {crop}x{crop} crops per step" in text
  # The quickstart's time as the README gives it.
  with open(os.path.join(ROOT, "README.md")) as f:
    minutes = re.search(r"## Quickstart \(offline, CPU, about (\d+) minutes\)", f.read())[1]
  assert re.findall(r"about (\d+) minutes on a 2-core CPU", text) == [minutes]
  assert re.findall(r"about (\d+) minutes on a CPU", _markdown("deblur_your_photo.ipynb")) == [
      minutes]
  text = _markdown("train_on_gopro.ipynb")
  config = biskip.get_config()
  steps = config.train.num_epochs * gopro.EXPECTED_PAIRS["train"]
  assert (f"{config.train.num_epochs} epochs of its {gopro.EXPECTED_PAIRS['train']} training "
          f"pairs (batch {config.train.batch_size} of {config.data.crop_size}x"
          f"{config.data.crop_size} crops: {steps:,} steps)") in text
  assert f"{gopro.EXPECTED_PAIRS['train']} training and {gopro.EXPECTED_PAIRS['test']} test" in text
  named = re.search(r"`SCHEME`: one of Table 1's twelve, (.*?)\. Schemes", text, re.S)[1]
  assert set(re.findall(r"`([^`]+)`", named)) == set(schemes.TABLE1)
  assert "`SA1P-BS` (the paper's best" in text and config.scheme == "SA1P-BS"
  psnr, ssim = schemes.TABLE1["SA1P-BS"]
  assert f"{psnr:.2f} dB / {ssim:.4f} for `SA1P-BS`" in text
  # The wheel the setup text and the install cell name is the one ./dev wheel builds.
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    version = tomllib.load(f)["project"]["version"]
  for path in NOTEBOOKS:
    assert f"biskip_jax-{version}-py3-none-any.whl" in _markdown(os.path.basename(path))
  assert f"biskip_jax-{version}-py3-none-any.whl" in _install_cell(NOTEBOOKS[0])


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


def _random_vgg19(cache_dir) -> None:
  """VGG19 weights up to conv1_2 (the tiny configs' layer), random, where the cache keeps them:
  the perceptual schemes run without downloading ImageNet's weights."""
  rng = np.random.default_rng(0)
  state = {"features.0.weight": rng.normal(0, 0.1, (64, 3, 3, 3)),
           "features.0.bias": np.zeros(64),
           "features.2.weight": rng.normal(0, 0.05, (64, 64, 3, 3)),
           "features.2.bias": np.zeros(64)}
  os.makedirs(cache_dir, exist_ok=True)
  np.savez(os.path.join(cache_dir, "vgg19_conv1_2.npz"),
           **{k: v.astype(np.float32) for k, v in state.items()})


@pytest.mark.slow
def test_train_on_gopro_notebook(run_dir, tmp_path):
  arrays = make_gopro(tmp_path / "GOPRO_Large")
  num_test = sum(1 for key in arrays if key[0] == "test" and key[2] == "sharp")
  _random_vgg19(tmp_path / "cache")
  nb = _execute("train_on_gopro.ipynb", run_dir,
                params={"GOPRO_DIR": str(tmp_path / "GOPRO_Large")},
                env={"BISKIP_JAX_CACHE": str(tmp_path / "cache")})
  text = _stdout(nb)
  assert f"GoPro at {tmp_path / 'GOPRO_Large'}: 5 training and {num_test} test pairs" in text
  assert "scheme SA1P-BS on cpu: compute dtype float32" in text
  assert "finished at step 4" in text
  found = re.search(rf"GoPro test \((\d+) pairs, step 4\): PSNR {_FLOAT} dB, SSIM {_FLOAT}", text)
  assert found and int(found[1]) == num_test, text[-2000:]
  workdir = run_dir / "runs" / "gopro_SA1P-BS_tiny"
  with open(workdir / "eval_gopro" / "metrics.json") as f:
    result = json.load(f)
  assert result["data"] == "gopro" and result["num_images"] == num_test
  assert result["psnr"] == pytest.approx(float(found[2]), abs=5e-3)
  path, photo = synthetic.example_photo()
  name = os.path.splitext(os.path.basename(path))[0] if path else "camera_blurred"
  assert load_image(workdir / "deblurred" / f"{name}.png").shape == photo.shape
  assert _num_pictures(nb) >= 3  # A GoPro pair, an evaluation figure, before/after.

