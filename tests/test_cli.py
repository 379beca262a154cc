"""Tests for the command lines' shared parts: config names, program names, the eval table."""

import ast
import glob
import os
import shutil
import signal
import subprocess
import sys

import pytest

from biskip_jax import cli, errors
from biskip_jax.errors import Stopped, UserError
from biskip_jax.evaluation import eval_lib
from biskip_jax.inference import deblur_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "configs")


def test_config_path_finds_shipped_configs_from_any_directory(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  biskip = os.path.join(SHIPPED, "biskip.py")
  assert cli.config_path("biskip") == biskip
  assert cli.config_path("biskip:SA1P-BS") == biskip + ":SA1P-BS"
  assert cli.config_path("biskip.py:A2-BS-w/o-R") == biskip + ":A2-BS-w/o-R"
  assert cli.config_path("configs/biskip.py:A2-S") == biskip + ":A2-S"  # The README's form.
  assert cli.config_path("./configs/quickstart.py") == os.path.join(SHIPPED, "quickstart.py")
  assert set(cli.shipped_configs()) == {"ablation", "biskip", "pretrain", "quickstart", "tiny"}
  # Anything else is a path of the user's, left as it is.
  for spec in ("configs/nosuch.py", "other/biskip.py", "configs/biskip", "biskip.txt"):
    assert cli.config_path(spec) == spec
  # An existing file wins over a shipped name.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "biskip.py").write_text("def get_config(): return None\n")
  assert cli.config_path("configs/biskip.py:X") == "configs/biskip.py:X"


def test_load_config_by_name_and_a_missing_one(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  config = cli.load_config("biskip:A2-S")
  # Table 1's A2-S: adversarial + L2 pixel loss, Skip-Net generator, no P, no S.
  assert config.model.variant == "S" and config.loss.pixel == "l2"
  assert config.loss.adversarial and not config.loss.perceptual and not config.loss.self_paced
  config.train.num_steps = 3  # Unlocked, for notebooks.
  assert cli.load_config("configs/quickstart.py").data.source == "synthetic"
  with pytest.raises(UserError, match=r"--config=nosuch:X: no file nosuch, and no shipped "
                                      r"config of that name \(shipped: ablation, biskip, "
                                      r"pretrain, quickstart, tiny\)"):
    cli.load_config("nosuch:X")


def _run(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.slow
def test_train_and_evaluate_take_shipped_config_names_outside_the_repository(tmp_path):
  workdir = tmp_path / "run"
  r = _run("train.py", "--config=quickstart:SA1-BS", f"--workdir={workdir}",
           "--config.optim.g_lr=-1", cwd=tmp_path)  # Stops at the settings check: loaded.
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "train.py: error: --config.optim.g_lr=-1.0: must be a number > 0"], r.stderr[-2000:]
  r = _run("train.py", "--config=configs/nosuch.py", f"--workdir={workdir}", cwd=tmp_path)
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "train.py: error: --config=configs/nosuch.py: no file configs/nosuch.py, and no shipped "
      "config of that name (shipped: ablation, biskip, pretrain, quickstart, tiny)"
  ], r.stderr[-2000:]
  r = _run("evaluate.py", f"--ckpt={tmp_path / 'nowhere'}", "--data=synthetic",
           "--config=quickstart", cwd=tmp_path)  # The config loads; the checkpoint is missing.
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      f"evaluate.py: error: --ckpt {tmp_path / 'nowhere'} does not exist"], r.stderr[-2000:]
  assert not workdir.exists()


def test_deblur_messages_carry_the_program_name(monkeypatch, tmp_path, capsys):
  monkeypatch.setattr(sys, "argv", ["/venv/bin/biskip-deblur"])
  with pytest.raises(UserError, match="nothing to deblur"):
    deblur_lib.run(None, str(tmp_path / "out"), [str(tmp_path / "missing.png")])
  assert capsys.readouterr().err.splitlines() == [
      f"biskip-deblur: {tmp_path / 'missing.png'}: no such file, folder or matching glob"]


def _result(n: int) -> dict:
  rows = [dict(name=f"img{i:02d}.png", psnr=30.0 + i, ssim=0.9) for i in range(n)]
  return eval_lib.summarize(rows, None)


def test_eval_table_names_the_csv_only_where_it_was_written(tmp_path):
  table = eval_lib.format_table(_result(25)).splitlines()
  assert len(table) == 1 + 20 + 1 + 1  # Header, 20 rows, the rest counted, the mean.
  assert table[-2] == "... (5 more not shown; with --out=DIR all are in DIR/per_image.csv)"
  assert table[-1].split()[:2] == ["mean", f"{30 + 12:.4f}"]
  out = tmp_path / "eval"
  out.mkdir()
  result = eval_lib.summarize(_result(25)["per_image"], str(out))
  csv = str(out / "per_image.csv")
  assert os.path.isfile(csv)
  assert eval_lib.format_table(result, csv_path=csv).splitlines()[-2] == f"... (5 more in {csv})"
  assert "more" not in eval_lib.format_table(_result(20))


@pytest.mark.skipif(shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git"))
                    and not os.path.isfile(os.path.join(ROOT, ".git")), reason="not a git checkout")
def test_default_outputs_are_ignored_by_git():
  for path in ("deblurred/photo.png", "dist/biskip_jax-0.1.0-py3-none-any.whl", "runs/x/a"):
    r = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert r.returncode == 0, path


@pytest.mark.slow
def test_a_user_error_is_one_line_and_exit_status_2(tmp_path):
  """cli.run's rule for every program, seen from outside (evaluate.py: it starts without JAX)."""
  r = _run("evaluate.py", f"--ckpt={tmp_path / 'run'}", "--data=synthetic", "--config=nosuch",
           cwd=tmp_path)
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.splitlines() == [
      "evaluate.py: error: --config=nosuch: no file nosuch, and no shipped config of that name "
      "(shipped: ablation, biskip, pretrain, quickstart, tiny)"], r.stderr[-2000:]


def test_a_signal_inside_signals_held_stops_at_the_blocks_end(stop_on_signals):
  reached = []
  with pytest.raises(Stopped) as e:
    with errors.signals_held():
      with errors.signals_held():
        signal.raise_signal(signal.SIGTERM)  # Its handler has run when this returns.
        reached.append("inner")
      reached.append("outer")  # The inner block's end does not stop: the outer one's does.
  assert reached == ["inner", "outer"] and e.value.signum == signal.SIGTERM
  with pytest.raises(Stopped) as e:
    with errors.signals_held():
      signal.raise_signal(signal.SIGINT)
      raise ValueError("the block fails too")
  assert e.value.signum == signal.SIGINT and isinstance(e.value.__context__, ValueError)
  with pytest.raises(Stopped):  # Outside the block the signal raises at once.
    signal.raise_signal(signal.SIGTERM)
    reached.append("not reached")
  assert reached == ["inner", "outer"]


_DROPS_ITS_STOP = """
import signal, sys
from biskip_jax import cli
from biskip_jax.errors import stop_on_signals


class Dropper:
  def __del__(self):  # Python prints what a __del__ raises as ignored, and goes on.
    signal.raise_signal(signal.SIGTERM)


def main(argv):
  stop_on_signals()
  Dropper()
  print("finished")
  sys.exit(0)


cli.run(main)
"""


def test_a_stop_a_library_dropped_still_ends_with_the_signals_status(tmp_path):
  """A stop raised where Python drops exceptions (a __del__, a gc callback) prints nothing
  there, and cli.run's last check ends the program as stopped (128 + 15)."""
  script = tmp_path / "drops.py"
  script.write_text(_DROPS_ITS_STOP)
  r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                     cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
  assert r.returncode == 128 + signal.SIGTERM, r.stderr[-2000:]
  assert r.stdout == "finished\n"
  assert r.stderr.splitlines() == [
      "drops.py: stopped by signal 15; the files written so far are complete"], r.stderr


_SHARED_FLAGS = {"ckpt": "define_ckpt_flag", "dtype": "define_dtype_flag",
                 "ensemble": "define_ensemble_flag", "tile_size": "define_tile_flags",
                 "tile_overlap": "define_tile_flags"}


def _flag_definitions(path: str) -> list[tuple[str, list[str]]]:
  """``(flag name, enum choices)`` of every ``flags.DEFINE_*("name", ...)`` call in a file."""
  found = []
  for node in ast.walk(ast.parse(open(path).read())):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("DEFINE_") and node.args
        and isinstance(node.args[0], ast.Constant)):
      choices = node.args[2] if len(node.args) > 2 else None
      found.append((node.args[0].value, [c.value for c in choices.elts]
                    if isinstance(choices, ast.List) else []))
  return found


def test_shared_flags_are_defined_once_in_cli():
  files = [p for folder in ("biskip_jax", "benchmarks", "experiments")
           for p in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)]
  cli_file = os.path.join(ROOT, "biskip_jax", "cli", "__init__.py")
  for path in files:
    for name, choices in _flag_definitions(path):
      # --dtype of the shipped-model export is the stored arrays' (float16), not a compute dtype.
      shared = (name in ("ckpt", "ensemble", "tile_size", "tile_overlap")
                or (name == "dtype" and "bfloat16" in choices))
      assert not shared or path == cli_file, f"{path}: --{name}: use cli.{_SHARED_FLAGS[name]}"
  assert sorted(n for n, _ in _flag_definitions(cli_file)) == [
      "ckpt", "dtype", "ensemble", "tile_overlap", "tile_size"]


@pytest.mark.slow
def test_the_shared_flags_are_the_programs_own(tmp_path):
  """--helpshort lists a program's flags, those defined for it by cli's helpers too."""
  r = _run("evaluate.py", "--helpshort", cwd=tmp_path)  # absl exits with 1 after the help.
  for flag in ("--ckpt", "--dtype", "--[no]ensemble", "--data"):
    assert f"  {flag}:" in r.stdout, r.stdout
  text = " ".join(r.stdout.split())
  assert "'unsharp': Pillow's unsharp mask" in text and "(default: 'float32')" in text
