"""The notebooks' install cell, run for real against a freshly built wheel in a clean venv.

The wheel is built as ``./dev wheel`` builds it (offline, without build isolation), from a copy
of the sources. The venv is new and holds nothing but what the cell installs; it sees this
environment's packages (everything but biskip-jax itself) through a ``.pth`` file, so that pip
finds the pinned dependencies installed and needs no network (``PIP_NO_INDEX``): a pin that
this environment does not satisfy fails the install.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What pyproject.toml builds from: the package, the configs, and the files it reads.
SOURCES = ("pyproject.toml", "README.md", "requirements.txt", "biskip_jax", "configs")


def _env() -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")}
  env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
             PIP_NO_INPUT="1", JAX_PLATFORMS="cpu")
  return env


def _build_wheel(tmp_path) -> str:
  pytest.importorskip("setuptools", minversion="77")  # Builds offline (requirements-dev.txt).
  src = tmp_path / "src"
  src.mkdir()
  for name in SOURCES:
    if os.path.isdir(os.path.join(ROOT, name)):
      shutil.copytree(os.path.join(ROOT, name), src / name,
                      ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
      shutil.copy(os.path.join(ROOT, name), src / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-index", "--no-deps",
                  "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(src)],
                 check=True, env=_env(), timeout=300)
  (wheel,) = glob.glob(str(tmp_path / "dist" / "biskip_jax-*.whl"))
  return wheel


def _clean_venv(tmp_path) -> tuple[str, str]:
  """A new venv seeing this environment's packages but biskip-jax: (its python, site dir)."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                 timeout=120)
  python = str(venv / "bin" / "python")
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        check=True, capture_output=True, text=True).stdout.strip()
  ours = sysconfig.get_paths()["purelib"]
  deps = tmp_path / "deps"
  deps.mkdir()
  for entry in os.listdir(ours):
    if not entry.startswith(("biskip_jax", "__editable__", "configs")):
      os.symlink(os.path.join(ours, entry), deps / entry)
  with open(os.path.join(site, "deps.pth"), "w") as f:
    f.write(f"{deps}\n")
  return python, site


CHECKS = """
import os
import biskip_jax, configs
from biskip_jax import cli
from biskip_jax.inference import loading, pretrained
print("PACKAGE", os.path.dirname(biskip_jax.__file__), os.path.dirname(configs.__file__))
config = cli.load_config("biskip:A2-S")
print("CONFIG", cli.config_path("biskip:A2-S"), config.model.variant, config.loss.pixel)
print("QUICKSTART", cli.config_path("configs/quickstart.py"))
_, _, step = loading.load_generator("pretrained")  # Checks the size, SHA-256 and shapes.
print("MODEL", pretrained.paths()[0], step)
"""


@pytest.mark.slow
def test_install_cell_installs_a_fresh_wheel_in_a_clean_venv(tmp_path):
  wheel = _build_wheel(tmp_path)
  names = set(zipfile.ZipFile(wheel).namelist())
  assert {"configs/biskip.py", "configs/quickstart.py", "configs/pretrain.py", "configs/tiny.py",
          "biskip_jax/inference/pretrained/biskip_general.npz",
          "biskip_jax/inference/pretrained/biskip_general.json",
          "biskip_jax/apps/demo_page/page.py"} <= names
  python, site = _clean_venv(tmp_path)
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "quickstart.ipynb"), as_version=4)
  cell = next(c.source for c in nb.cells if c.cell_type == "code")
  assert cell.count('PACKAGE = ""  #@param') == 1
  cell = cell.replace('PACKAGE = ""  #@param', f"PACKAGE = {wheel!r}  #@param")
  elsewhere = tmp_path / "elsewhere"  # Not a checkout, and no configs/ folder.
  elsewhere.mkdir()
  r = subprocess.run([python, "-c", cell + CHECKS], cwd=elsewhere, capture_output=True,
                     text=True, env=_env(), timeout=600)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
  assert out["installed"] == f"biskip-jax from {wheel}"
  assert out["PACKAGE"] == f"{site}/biskip_jax {site}/configs"
  # Table 1's A2-S: L2 pixel loss and the Skip-Net generator, from the installed config.
  assert out["CONFIG"] == f"{site}/configs/biskip.py:A2-S S l2"
  assert out["QUICKSTART"] == f"{site}/configs/quickstart.py"
  assert out["MODEL"] == f"{site}/biskip_jax/inference/pretrained/biskip_general.npz 18000"
  # The console script, from another folder, with a shipped config's name; it names itself.
  r = subprocess.run([os.path.join(os.path.dirname(python), "biskip-train"), "--config=biskip:A2-S",
                      f"--workdir={tmp_path / 'run'}", "--config.optim.g_lr=-1"], cwd=elsewhere,
                     capture_output=True, text=True, env=_env(), timeout=300)
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "biskip-train: error: --config.optim.g_lr=-1.0: must be a number > 0"], r.stderr[-3000:]
