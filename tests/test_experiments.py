"""Tests for the experiment scripts: deep priors, the Table 1 ablation and the SPL plots."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from biskip_jax import eval_lib, spl, train_lib, vgg
from biskip_jax.datasets import load_image, save_image
from biskip_jax.errors import UserError
from configs import biskip, tiny
from experiments import ablation, deep_prior, plot_spl, side_by_side

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _png_size(path):
  with Image.open(path) as img:
    return img.size


def _script(name, *args):
  """Runs ``python -m experiments.NAME ARGS`` from the repository root."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_deep_prior_writes_curves_for_every_task_and_variant(tmp_path):
  # One variant keeps the test to one compiled step (BS differs only in its layers, see
  # test_deep_prior_builds_each_variant); rows are keyed by variant all the same.
  iters = 3
  results = deep_prior.run(
      str(tmp_path), image="astronaut", size=32, iters=iters, lr=1e-3, seed=0, width=0.125,
      num_res_blocks=1, variants=["S"], tasks=["noise", "blur"], noise_scale=0.1,
      kernel_size=5, max_shake=0.005, blur_noise=0.01, report_psnr=[20.0])
  rows = _csv(tmp_path / "deep_prior.csv")
  assert tuple(rows[0]) == deep_prior.CSV_COLUMNS
  assert len(rows) == iters * 2
  assert {(r["task"], r["variant"]) for r in rows} == {("noise", "S"), ("blur", "S")}
  assert sorted({int(r["iteration"]) for r in rows}) == [1, 2, 3]
  assert all(math.isfinite(float(r["psnr"])) and float(r["psnr"]) > 0 for r in rows)
  # The blurred photo is far closer to the target than noise is: a sanity check of inputs.
  assert results["S"]["blur"]["psnr"][0] > results["S"]["noise"]["psnr"][0]
  assert results["S"]["noise"]["output"].shape == (32, 32, 3)
  for name in ("deep_prior.png", "deep_prior_images.png"):
    width, height = _png_size(tmp_path / name)
    assert width > 200 and height > 200
  table = deep_prior.summary(results, [20.0])
  assert "noise" in table and "blur" in table


def test_deep_prior_builds_each_variant():
  s = deep_prior.make_generator("S", 0.5, 3)
  bs = deep_prior.make_generator("BS", 0.5, 3)
  assert s.variant == "S" and bs.variant == "BS" and bs.num_res_blocks == 3
  assert bs.channels == (16, 32, 64, 64, 64) and bs.skip_channels == (8, 16, 32, 32)
  with pytest.raises(UserError, match="--variants: unknown variant 'XL'"):
    deep_prior.make_generator("XL", 1.0, 3)


def test_first_reaching_is_one_based():
  curve = np.array([10.0, 19.9, 20.0, 25.0])
  assert deep_prior.first_reaching(curve, 20.0) == 3
  assert deep_prior.first_reaching(curve, 10.0) == 1
  assert deep_prior.first_reaching(curve, 30.0) is None


def test_target_is_a_square_crop_of_the_requested_size():
  target = deep_prior.load_target("astronaut", 48)
  assert target.shape == (48, 48, 3) and target.dtype == np.uint8
  assert target.std() > 10  # A photo, not a flat image.


def _ablation(workdir, names, **kw):
  config = tiny.get_config("1-BS")
  return ablation.run(config, str(workdir), budget=2, names=names, epochs=2, max_images=1,
                      **kw)


@pytest.mark.slow
def test_ablation_table_resume_and_spl_logs(tmp_path, monkeypatch):
  rows = _ablation(tmp_path, ["S1-BS", "P-BS"], vgg_mode="skip")
  table = _csv(tmp_path / "ablation.csv")
  assert tuple(table[0]) == ablation.COLUMNS
  assert [r["scheme"] for r in table] == ["S1-BS", "P-BS"]
  trained, skipped = table
  assert math.isfinite(float(trained["psnr"])) and 0 < float(trained["ssim"]) <= 1
  assert trained["paper_psnr"] == ""  # S1-BS is not one of Table 1's schemes.
  assert skipped["psnr"] == "" and skipped["note"] == ablation.SKIPPED_VGG_NOTE
  assert skipped["paper_psnr"] == "26.77"  # Table 1's P-BS.
  md = (tmp_path / "ablation.md").read_text()
  assert "| S1-BS |" in md and "(blurred input)" in md and "not comparable" in md
  assert not rows[0]["resumed"]
  assert (rows[0]["epochs"], rows[0]["steps_per_epoch"]) == (2, 1)

  # The self-paced run logged per-sample v_i (train_lib's "spl" rows); plot them.
  run_dir = tmp_path / "S1-BS"
  with open(run_dir / "metrics.jsonl") as f:
    spl_rows = [r for r in map(json.loads, f) if r["split"] == "spl"]
  assert [r["step"] for r in spl_rows] == [2]
  assert len(spl_rows[0]["v"]) == len(spl_rows[0]["loss"]) == 2  # The batch size.
  assert spl_rows[0]["epoch"] == 2 and math.isfinite(spl_rows[0]["lam"])
  assert all(0.0 <= v <= 1.0 for v in spl_rows[0]["v"])
  summary = plot_spl.run(str(run_dir))
  assert [r["epoch"] for r in summary] == [2] and summary[0]["source"] == "per-sample"
  assert _png_size(run_dir / "spl.png")[0] > 200
  assert len(_csv(run_dir / "spl.csv")) == 1

  # A finished scheme is not trained again; another budget in the same workdir is refused.
  def no_training(*args, **kwargs):
    raise AssertionError("a finished scheme was trained again")

  monkeypatch.setattr(train_lib, "train_and_evaluate", no_training)
  again = _ablation(tmp_path, ["S1-BS"])
  assert again[0]["resumed"] and again[0]["psnr"] == rows[0]["psnr"]
  assert [r["scheme"] for r in _csv(tmp_path / "ablation.csv")] == ["S1-BS"]
  with pytest.raises(UserError, match=r"--budget=2 .* new --workdir"):
    ablation.run(tiny.get_config("1-BS"), str(tmp_path), budget=3, epochs=3, names=["S1-BS"])
  with pytest.raises(UserError, match=r"a run of 1 steps per epoch, not 2: pass the --epochs "
                     r"it used \(2\) or use a new --workdir"):
    ablation.run(tiny.get_config("1-BS"), str(tmp_path), budget=2, epochs=1, names=["S1-BS"])


def test_ablation_random_vgg_is_loadable_and_labelled(tmp_path):
  config = tiny.get_config("1-BS")
  weights, note = ablation.resolve_vgg("random", config, str(tmp_path), ["A1P-BS"])
  assert note == ablation.RANDOM_VGG_NOTE and "not ImageNet" in note
  params = vgg.load_vgg19_params(weights, layer=config.loss.vgg_layer)
  kernel = params["params"]["conv1_2"]["kernel"]
  assert kernel.shape == (3, 3, 64, 64) and 0 < float(np.std(kernel)) < 1
  assert ablation.resolve_vgg("random", config, str(tmp_path), ["1-BS"]) == (None, "")
  scheme = ablation.scheme_config(config, "A1P-BS", budget=10, epochs=5, data="synthetic",
                                  data_path=None, vgg_weights=weights)
  assert scheme.loss.vgg_weights == weights and scheme.loss.perceptual
  assert scheme.model.variant == "BS" and scheme.loss.pixel == "l1"
  assert scheme.train.num_steps == 10 and scheme.train.steps_per_epoch == 2
  assert config.loss.vgg_weights == ""  # The base config is left alone.


def _eq10_q1(big_t: int) -> float:
  """q(1) of eq. 10, ``tan((1 - t / (2 (T + 1))) * pi / 2)`` at t = 1, written out here."""
  return math.tan((1 - 1 / (2 * (big_t + 1))) * math.pi / 2)


def _schedule(config, **kw):
  """``(steps_per_epoch, total_steps, T)`` that training resolves for a scheme's config."""
  return train_lib.resolve_schedule(ablation.scheme_config(
      config, "SA1-BS", data="synthetic", data_path=None, vgg_weights=None, **kw))


def test_ablation_epochs_default_to_the_config_and_flag_overrides():
  config = tiny.get_config("1-BS")
  config.train.num_epochs = 7
  spe, total, big_t = _schedule(config, budget=70, epochs=0)
  assert (spe, total, big_t) == (10, 70, 7)
  assert spl.q_schedule(1, big_t) == pytest.approx(_eq10_q1(7), rel=1e-12)
  assert _schedule(config, budget=20, epochs=0) == (3, 20, 7)  # A last, shorter epoch.
  spe, total, big_t = _schedule(config, budget=70, epochs=5)  # --epochs overrides.
  assert (spe, total, big_t) == (14, 70, 5)
  assert spl.q_schedule(1, big_t) == pytest.approx(_eq10_q1(5), rel=1e-12)
  # The paper's set-up: configs/biskip.py's 300 epochs of GoPro's 2,103 pairs at batch 1.
  paper = _schedule(biskip.get_config("SA1P-BS"), budget=630900, epochs=0)
  assert paper == (2103, 630900, 300)
  assert config.train.num_epochs == 7 and config.train.num_steps == -1  # Base left alone.


def test_ablation_run_passes_the_config_epochs_to_training(tmp_path, monkeypatch):
  config = tiny.get_config("1-BS")
  config.train.num_epochs = 7
  seen = []

  def fake_train(cfg, workdir):
    seen.append(train_lib.resolve_schedule(cfg))
    os.makedirs(workdir)

  monkeypatch.setattr(train_lib, "train_and_evaluate", fake_train)
  monkeypatch.setattr(eval_lib, "run", lambda *a, **k: {"psnr": 20.0, "ssim": 0.5,
                                                        "num_images": 1})
  ablation.run(config, str(tmp_path / "default"), budget=14, names=["S1-BS"])
  ablation.run(config, str(tmp_path / "flag"), budget=14, names=["S1-BS"], epochs=2)
  assert seen == [(2, 14, 7), (7, 14, 2)]
  assert "7 epochs (T of eq. 10) of 2 steps" in (tmp_path / "default" / "ablation.md").read_text()


def test_ablation_refuses_to_resume_with_other_epochs(tmp_path):
  """An interrupted scheme (config.json, no result) made with the old default of 4 epochs."""
  config = tiny.get_config("1-BS")  # num_epochs 8 (the quickstart's): 2 steps per epoch.
  old = ablation.scheme_config(config, "1-BS", budget=16, epochs=4, data="synthetic",
                               data_path=None, vgg_weights=None)
  os.makedirs(tmp_path / "1-BS")
  with open(tmp_path / "1-BS" / "config.json", "w") as f:
    f.write(old.to_json())
  with pytest.raises(UserError, match=r"a run of 4 steps per epoch, not 2: pass the --epochs "
                     r"it used \(4\)"):
    ablation.run(config, str(tmp_path), budget=16, names=["1-BS"])


def test_ablation_rejects_bad_epochs(tmp_path):
  config = tiny.get_config("1-BS")
  config.train.num_epochs = 7
  with pytest.raises(UserError, match=r"^--epochs=-1: expected a positive number"):
    ablation.run(config, str(tmp_path), budget=14, names=["1-BS"], epochs=-1)
  with pytest.raises(UserError, match=r"config.train.num_epochs=7 \(--epochs unset\) with "
                     r"--budget=10: 2 step\(s\) per epoch give 5 epochs, not 7"):
    ablation.run(config, str(tmp_path), budget=10, names=["1-BS"])
  with pytest.raises(UserError, match="give 3 epochs, not 7"):  # Fewer steps than epochs.
    ablation.scheme_config(config, "1-BS", budget=3, epochs=0, data="synthetic",
                           data_path=None, vgg_weights=None)
  config.train.num_epochs = 0
  with pytest.raises(UserError, match=r"config.train.num_epochs=0 .*pass --epochs"):
    ablation.run(config, str(tmp_path), budget=14, names=["1-BS"])
  assert not os.listdir(tmp_path)  # Refused before any work.


def test_ablation_rejects_bad_schemes_and_data(tmp_path):
  with pytest.raises(UserError, match="--schemes: unknown generator variant 'XL'"):
    _ablation(tmp_path, ["1-XL"])
  with pytest.raises(UserError, match="--data=kohler has no training split"):
    _ablation(tmp_path, ["1-BS"], data="kohler")
  assert ablation.scheme_dirname("A2-BS-w/o-R") == "A2-BS-w_o-R"


def _write_metrics(workdir, with_spl=True):
  """A synthetic 3-epoch SPL log: 4 steps per epoch, logged every 2 steps, batch of 4."""
  rows = [{"step": 0, "split": "run", "steps_per_epoch": 4, "total_steps": 12,
           "total_epochs": 3}]
  lams = {1: math.inf, 2: 0.5, 3: 0.4}
  for step in range(2, 13, 2):
    epoch = (step - 1) // 4 + 1
    v = [1.0] * 4 if epoch == 1 else [1.0, 0.6, 0.2, 0.0]
    rows.append({"step": step, "split": "train", "lam": lams[epoch], "q": 3.0 - 0.5 * epoch,
                 "v_mean": float(np.mean(v)), "v_min": min(v)})
    if with_spl:
      rows.append({"step": step, "split": "spl", "epoch": epoch, "lam": lams[epoch],
                   "q": 3.0 - 0.5 * epoch, "loss": [0.1, 0.2, 0.3, 0.6], "v": v})
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)


def test_plot_spl_summarises_per_sample_weights(tmp_path):
  _write_metrics(tmp_path)
  out = tmp_path / "figs" / "spl.png"
  rows = plot_spl.run(str(tmp_path), str(out))
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert math.isinf(rows[0]["lam"]) and rows[1]["lam"] == 0.5
  assert rows[0]["v_min"] == 1.0 and rows[0]["samples"] == 8
  assert rows[2]["v_zero_fraction"] == 0.25 and rows[2]["v_median"] == pytest.approx(0.4)
  assert _png_size(out)[0] > 200
  table = _csv(tmp_path / "figs" / "spl.csv")
  assert tuple(table[0]) == plot_spl.SUMMARY_COLUMNS and len(table) == 3
  assert "per-sample" in plot_spl.format_summary(rows)


def test_plot_spl_falls_back_to_batch_statistics(tmp_path):
  _write_metrics(tmp_path, with_spl=False)
  rows = plot_spl.run(str(tmp_path))
  assert [r["source"] for r in rows] == ["batch mean/min"] * 3
  assert rows[2]["v_min"] == 0.0 and rows[2]["v_mean"] == pytest.approx(0.45)
  assert os.path.exists(tmp_path / "spl.png")


@pytest.mark.slow
def test_plot_spl_cli_and_errors(tmp_path):
  _write_metrics(tmp_path / "run")
  ok = _script("plot_spl", f"--workdir={tmp_path / 'run'}")
  assert ok.returncode == 0, ok.stderr
  assert "wrote" in ok.stdout and os.path.exists(tmp_path / "run" / "spl.png")
  missing = _script("plot_spl", f"--workdir={tmp_path / 'nothing'}")
  assert missing.returncode == 2
  assert missing.stderr.strip().splitlines() == [
      f"plot_spl.py: error: --workdir={tmp_path / 'nothing'}: no metrics.jsonl (not a "
      "training workdir, or training has not logged yet)"]


@pytest.mark.slow
def test_bad_flags_give_one_line_errors(tmp_path):
  bad_scheme = _script("ablation", f"--workdir={tmp_path}", "--budget=5",
                       "--schemes=1-BS,2-XL")
  assert bad_scheme.returncode == 2
  lines = bad_scheme.stderr.strip().splitlines()
  assert len(lines) == 1 and "--schemes: unknown generator variant 'XL'" in lines[0]
  bad_epochs = _script("ablation", f"--workdir={tmp_path}", "--budget=5", "--epochs=-2")
  assert bad_epochs.returncode == 2
  assert bad_epochs.stderr.strip().splitlines() == [
      "ablation.py: error: --epochs=-2: expected a positive number of epochs, or 0 for the "
      "config's train.num_epochs"]
  bad_size = _script("deep_prior", f"--out={tmp_path}", "--size=0")
  assert bad_size.returncode == 2
  assert bad_size.stderr.strip().splitlines()[0].startswith("deep_prior.py: error: flag --size")
  bad_variant = _script("deep_prior", f"--out={tmp_path}", "--variants=S,XL")
  assert bad_variant.returncode == 2
  assert bad_variant.stderr.strip().splitlines() == [
      "deep_prior.py: error: --variants: unknown variant 'XL'; expected one of S, BS-w/o-R, "
      "BS-cR, BS"]


@pytest.mark.slow
def test_side_by_side_windows_and_layout(workdir, tmp_path):
  img = np.arange(7 * 10 * 3, dtype=np.uint8).reshape(7, 10, 3)
  np.testing.assert_array_equal(side_by_side.centre_window(img, 4), img[1:5, 3:7])
  np.testing.assert_array_equal(side_by_side.centre_window(img, 50), img)
  a, b = np.zeros((4, 5, 3), np.uint8), np.ones((3, 5, 3), np.uint8)
  canvas = side_by_side.compose([(a, b), (b, b)])
  gap = side_by_side._GAP  # pylint: disable=protected-access
  assert canvas.shape == (4 + gap + 3, 5 + gap + 5, 3)
  np.testing.assert_array_equal(canvas[:4, :5], a)
  np.testing.assert_array_equal(canvas[:3, 5 + gap:], b)
  assert (canvas[3, 5 + gap:] == 255).all()  # Below the shorter panel: background.
  # The script end to end on a training run.
  save_image(tmp_path / "p.png", np.asarray(skimage.data.chelsea()[:40, :48]))
  out = tmp_path / "fig.png"
  r = subprocess.run([sys.executable, "-m", "experiments.side_by_side", f"--ckpt={workdir[0]}",
                      f"--out={out}", "--crop=32", str(tmp_path / "p.png")], cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert load_image(out).shape == (32, 32 + gap + 32, 3)
