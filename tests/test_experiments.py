"""Tests for the experiment scripts: deep priors, the Table 1 ablation and the SPL plots."""

import csv
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy import ndimage

from biskip_jax.config import config_checks
from biskip_jax.data.datasets import load_image, save_image
from biskip_jax.errors import UserError
from biskip_jax.evaluation import eval_lib
from biskip_jax.inference import full_resolution, loading, pretrained
from biskip_jax.nn import vgg_loading
from biskip_jax.objective import spl
from biskip_jax.train import train_lib
from configs import ablation as ablation_config
from configs import biskip, tiny
from experiments import (
  ablation,
  ablation_report,
  average_weights,
  brightness_gap,
  deep_prior,
  plot_spl,
  residual_gain,
  shipping_rule,
  side_by_side,
  what_changed,
)
from tests.conftest import persistent_compile_cache

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
  assert tuple(table[0]) == ablation_report.SUMMARY_COLUMNS
  assert [r["scheme"] for r in table] == ["S1-BS", "P-BS"]
  trained, skipped = table
  assert math.isfinite(float(trained["psnr_mean"])) and 0 < float(trained["ssim_mean"]) <= 1
  assert trained["seeds"] == "1" and trained["psnr_std"] == ""  # No spread from one seed.
  assert trained["paper_psnr"] == ""  # S1-BS is not one of Table 1's schemes.
  assert skipped["psnr_mean"] == "" and skipped["note"] == ablation.SKIPPED_VGG_NOTE
  assert skipped["paper_psnr"] == "26.77"  # Table 1's P-BS.
  md = (tmp_path / "ablation.md").read_text()
  assert "| S1-BS | 1 |" in md and "(blurred input)" in md and "not comparable" in md
  assert [r["scheme"] for r in rows] == ["S1-BS"] and not rows[0]["resumed"]
  assert (rows[0]["epochs"], rows[0]["steps_per_epoch"], rows[0]["seed"]) == (2, 1, 0)

  # The self-paced run logged per-sample v_i (train_lib's "spl" rows); plot them.
  run_dir = tmp_path / "S1-BS" / "seed0"
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
  assert again[0]["resumed"] and again[0]["evals"] == rows[0]["evals"]
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
  params = vgg_loading.load_vgg19_params(weights, layer=config.loss.vgg_layer)
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
  os.makedirs(tmp_path / "1-BS" / "seed0")
  with open(tmp_path / "1-BS" / "seed0" / "config.json", "w") as f:
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


def test_ablation_comparisons_follow_the_paper_claims():
  names = ["1-BS", "1-BS-cR", "1-BS-w/o-R", "1-S", "S1-BS", "2-BS", "A1-BS"]
  got = [(c.kind, c.better, c.worse) for c in ablation_report.comparisons(names)]
  assert got == [("architecture", "1-BS", "1-BS-cR"), ("architecture", "1-BS-cR", "1-BS-w/o-R"),
                 ("architecture", "1-BS-w/o-R", "1-S"), ("self-paced", "S1-BS", "1-BS"),
                 ("L1 vs L2", "1-BS", "2-BS"), ("adversarial", "A1-BS", "1-BS")]
  # Missing variants are skipped over: BS against S directly.
  assert [(c.better, c.worse) for c in ablation_report.comparisons(["A2-S", "A2-BS"])] == [
      ("A2-BS", "A2-S")]
  assert ablation_report.comparisons(["1-BS", "P-BS"]) == []
  # Table 1's figures (paper, §6): the pair itself when both are there, else its analogue.
  ref = ablation_report.paper_reference
  c = ablation_report.Comparison
  assert ref(c("L1 vs L2", "1-BS", "2-BS")) == (pytest.approx(28.94 - 28.92), "1-BS − 2-BS")
  assert ref(c("architecture", "1-BS", "1-BS-cR")) == (pytest.approx(29.10 - 28.51),
                                                       "A2-BS − A2-BS-cR")
  assert ref(c("self-paced", "S1-BS", "1-BS")) == (pytest.approx(29.82 - 29.29),
                                                   "SA1P-BS − A1P-BS")
  assert ref(c("adversarial", "A1-BS", "1-BS")) == (pytest.approx(29.10 - 28.92),
                                                    "A2-BS − 2-BS")


def test_ablation_config_is_the_documented_protocol():
  base = ablation_config.get_config()
  doc = ablation_config.__doc__
  names = doc.split("--schemes=")[1].split()[0].split(",")
  assert names == ["1-BS", "1-BS-cR", "1-BS-w/o-R", "1-S", "S1-BS", "2-BS", "A1-BS"]
  # Every claim of the issue is tested by the documented schemes.
  kinds = [c.kind for c in ablation_report.comparisons(names)]
  assert kinds == ["architecture"] * 3 + ["self-paced", "L1 vs L2", "adversarial"]
  budget = int(doc.split("--budget=")[1].split()[0])
  every = int(doc.split("--eval_every=")[1].split()[0])
  for name in names:
    c = ablation.scheme_config(base, name, budget=budget, epochs=0, data="mix",
                               data_path=None, vgg_weights=None, seed=2, eval_every=every)
    config_checks.check_settings(c)
    assert train_lib.resolve_schedule(c) == (150, budget, 8)
    assert c.train.seed == 2 and c.train.eval_every == every and not c.loss.perceptual
    assert c.data.source == "mix" and c.data.mix.frames == c.data.mix.synthetic == 0.5
    assert tuple(c.model.channels) == (16, 32, 64, 64, 64) and c.model.num_res_blocks == 3
    assert c.loss.gamma_fft == 0.0  # The paper's loss terms only.
  assert base.data.synthetic.num_eval == 0 and base.data.frames.num_eval == 4
  assert base.train.eval_num_images >= base.data.frames.num_eval  # Validation sees them all.


def _fake_ablation(workdir, psnr, data="mix", extra=(), curves=False):
  """An ablation workdir with results only: ``psnr[scheme] = [PSNR of seed 0, 1, ...]``."""
  names = list(psnr)
  seeds = list(range(len(next(iter(psnr.values())))))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, ablation_report.SETTINGS_FILE), "w") as f:
    json.dump({"command": "python -m experiments.ablation --seeds=3", "budget": 10,
               "data": data, "schemes": names, "seeds": seeds, "eval_data": list(extra),
               "setup": "Setup: tiny."}, f)
  for name, values in psnr.items():
    for seed, v in zip(seeds, values):
      path = ablation_report.run_dir(workdir, name, seed)
      os.makedirs(path)
      evals = {d: {"psnr": v + k, "ssim": v / 100, "blurred_psnr": 20.0,
                   "blurred_ssim": 0.5, "num_images": 2} for k, d in enumerate([data, *extra])}
      with open(os.path.join(path, ablation_report.RESULT_FILE), "w") as f:
        json.dump({"scheme": name, "seed": seed, "train_seconds": 1.0, "note": "",
                   "evals": evals}, f)
      if curves:  # Validation rows as training logs them: PSNR rising to the final value.
        with open(os.path.join(path, "metrics.jsonl"), "w") as f:
          for step in (5, 10):
            f.write(json.dumps({"step": step, "split": "eval", "psnr": v - 1 + step / 10,
                                "ssim": 0.5}) + "\n")


def test_ablation_report_statistics_and_verdicts(tmp_path):
  psnr = {"1-BS": [22.0, 23.0, 21.5], "1-S": [21.0, 22.5, 21.0],  # BS ahead in every seed.
          "S1-BS": [22.5, 22.0, 22.0],  # Self-paced ahead in 2 of 3 seeds.
          "2-BS": [22.5, 23.5, 22.0]}  # L1 behind in every seed.
  _fake_ablation(tmp_path, psnr, extra=["folder:/somewhere/gopro_pairs"])
  out = tmp_path / "docs" / "experiments.md"
  assert ablation_report.write(str(tmp_path), str(out)) == str(out)
  summary = {(r["scheme"], r["dataset"]): r for r in _csv(tmp_path / "docs" / "ablation.csv")}
  for name, values in psnr.items():
    row = summary[(name, "mix")]
    assert float(row["psnr_mean"]) == pytest.approx(np.mean(values))
    assert float(row["psnr_std"]) == pytest.approx(np.std(values, ddof=1))
    assert float(row["ssim_std"]) == pytest.approx(np.std(np.array(values) / 100, ddof=1))
    assert float(row["gain_mean"]) == pytest.approx(np.mean(values) - 20.0)
    assert row["above_input"] == "3/3"
    extra = summary[(name, "folder:/somewhere/gopro_pairs")]  # The fake adds 1 dB there.
    assert float(extra["psnr_mean"]) == pytest.approx(np.mean(values) + 1)
  pairs = {(p["better"], p["worse"], p["dataset"]): p
           for p in _csv(tmp_path / "docs" / "ablation_pairs.csv")}
  expected = {("1-BS", "1-S"): ("3/3", "holds"), ("S1-BS", "1-BS"): ("2/3", "unresolved"),
              ("1-BS", "2-BS"): ("0/3", "reversed")}
  for (a, b), (better_in, verdict) in expected.items():
    p = pairs[(a, b, "mix")]
    d = np.array(psnr[a]) - np.array(psnr[b])
    assert [float(x) for x in p["delta_psnr"].split(";")] == pytest.approx(d)
    assert float(p["delta_psnr_mean"]) == pytest.approx(d.mean())
    assert float(p["delta_psnr_std"]) == pytest.approx(d.std(ddof=1))
    assert (p["better_in"], p["verdict"]) == (better_in, verdict)
  md = out.read_text()
  m, sd = np.mean(psnr["1-BS"]), np.std(psnr["1-BS"], ddof=1)
  assert f"| 1-BS | 3 | {m:.2f} ± {sd:.2f} |" in md
  assert "## folder:gopro_pairs" in md and "/somewhere" not in md  # No machine's path.
  assert "| (blurred input) | | 20.00 | 0.5000 |" in md
  assert "+0.02 (1-BS − 2-BS)" in md  # Table 1's difference beside ours.
  d = np.array(psnr["1-BS"]) - np.array(psnr["1-S"])
  assert f"- architecture, 1-BS > 1-S: mix: holds (3/3 seeds, {d.mean():+.2f} dB)" in md
  assert "## mix (the training data's held-out split)" in md
  assert "ablation_psnr.png" not in md  # No run logged a validation: no figure.


def test_ablation_report_plots_the_validation_curves(tmp_path):
  psnr = {"1-BS": [22.0, 23.0], "1-S": [21.0, 22.5]}
  _fake_ablation(tmp_path, psnr, curves=True)
  settings, _ = ablation_report.load(str(tmp_path))
  curves = ablation_report.validation_curves(str(tmp_path), settings)
  steps, values = curves["1-S"][1]
  assert steps.tolist() == [5, 10] and values.tolist() == pytest.approx([22.0, 22.5])
  md = (tmp_path / ablation_report.write(str(tmp_path))).read_text()
  assert "![validation PSNR against steps](ablation_psnr.png)" in md
  assert _png_size(tmp_path / "ablation_psnr.png")[0] > 200


def test_ablation_report_cli_needs_an_ablation_workdir(tmp_path):
  with pytest.raises(UserError, match=r"no ablation.json \(not the workdir of"):
    ablation_report.write(str(tmp_path))


def test_ablation_refuses_the_one_seed_layout(tmp_path):
  os.makedirs(tmp_path / "1-BS")
  (tmp_path / "1-BS" / ablation.RESULT_FILE).write_text("{}")
  with pytest.raises(UserError, match=r"1-BS holds a run made before runs were kept per seed"):
    ablation.run(tiny.get_config("1-BS"), str(tmp_path), budget=2, epochs=2, names=["1-BS"])
  with pytest.raises(UserError, match=r"^--seeds=0: expected at least 1"):
    ablation.run(tiny.get_config("1-BS"), str(tmp_path), budget=2, epochs=2, names=["1-BS"],
                 seeds=0)


def _moving_frames(folder, n=24, size=(40, 48)):
  """``n`` consecutive frames of a photo sliding right 2 px per frame (real motion blur)."""
  os.makedirs(folder)
  photo = np.asarray(skimage.data.astronaut())[::4, ::4]
  for t in range(n):
    save_image(os.path.join(folder, f"{t + 1:06d}.png"),
               photo[20:20 + size[0], 2 * t:2 * t + size[1]])


def _tiny_mix(tmp_path):
  """A tiny config of configs/ablation.py's kind: frames + synthetic photos, mixed."""
  _moving_frames(tmp_path / "frames" / "seq")
  photos = tmp_path / "photos"
  os.makedirs(photos)
  for i, name in enumerate(("chelsea", "coffee", "rocket", "astronaut")):
    save_image(photos / f"{i}_{name}.png", np.asarray(getattr(skimage.data, name)())[:64, :64])
  pairs = tmp_path / "pairs"
  for sub in ("blur", "sharp"):
    os.makedirs(pairs / sub)
  frames = [load_image(tmp_path / "frames" / "seq" / f"{t:06d}.png") for t in range(1, 6)]
  save_image(pairs / "sharp" / "a.png", frames[2])
  save_image(pairs / "blur" / "a.png", np.mean(frames, axis=0).round().astype(np.uint8))
  config = tiny.get_config("1-BS")
  d = config.data
  d.source = "mix"
  d.mix.frames, d.mix.synthetic = 0.5, 0.5
  d.frames.path = str(tmp_path / "frames")
  d.frames.window = (3, 5)
  d.frames.eval_range = (0.75, 1.0)  # Frames 19-24 (the last 6) held out: 2 windows of 3.
  d.frames.eval_window = 3
  d.frames.num_train = 16
  d.synthetic.images = str(photos)
  d.synthetic.holdout = ()
  d.synthetic.holdout_every = 4  # 0_chelsea held out.
  d.synthetic.num_eval = 0  # Validation on the held-out frames only, as configs/ablation.py.
  d.synthetic.kernel_size = 7
  d.synthetic.num_train = 16
  config.train.eval_num_images = 2
  return config, f"folder:{pairs}"


@pytest.mark.slow
def test_ablation_seeds_pairs_and_resume_end_to_end(tmp_path, monkeypatch):
  config, pairs = _tiny_mix(tmp_path)
  work = tmp_path / "ablation"
  names = ["1-BS", "S1-BS"]
  kw = dict(budget=2, epochs=2, data="mix", names=names, seeds=2, eval_data=[pairs])
  # The second seed's programs are the first's: loaded from the cache, not compiled again.
  with persistent_compile_cache(str(tmp_path / "xla_cache")):
    runs = ablation.run(config, str(work), **kw)
  assert [(r["scheme"], r["seed"]) for r in runs] == [
      ("1-BS", 0), ("S1-BS", 0), ("1-BS", 1), ("S1-BS", 1)]  # Seed by seed.
  assert not any(r["resumed"] for r in runs)
  files = {}
  for name in names:
    for seed in (0, 1):
      path = work / name / f"seed{seed}"
      with open(path / ablation.RESULT_FILE) as f:
        files[(name, seed)] = json.load(f)
      evals = files[(name, seed)]["evals"]
      assert evals["mix"]["num_images"] == 2 and evals[pairs]["num_images"] == 1
      assert (path / "eval" / "metrics.json").exists()
      assert (path / "eval_folder_pairs" / "metrics.json").exists()
  # The held-out frames do not depend on the seed: every run scores the same blurred inputs.
  assert len({files[k]["evals"]["mix"]["blurred_psnr"] for k in files}) == 1
  # The seeds differ (initialisation and data), so the two runs of a scheme differ.
  assert (files[("1-BS", 0)]["evals"]["mix"]["psnr"]
          != files[("1-BS", 1)]["evals"]["mix"]["psnr"])

  summary = {(r["scheme"], r["dataset"]): r for r in _csv(work / "ablation.csv")}
  for name in names:
    for dataset in ("mix", pairs):
      values = [files[(name, s)]["evals"][dataset]["psnr"] for s in (0, 1)]
      row = summary[(name, dataset)]
      assert float(row["psnr_mean"]) == pytest.approx(np.mean(values), abs=1e-9)
      assert float(row["psnr_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-9)
  (pair,) = [p for p in _csv(work / "ablation_pairs.csv") if p["dataset"] == "mix"]
  assert (pair["kind"], pair["better"], pair["worse"]) == ("self-paced", "S1-BS", "1-BS")
  d = np.array([files[("S1-BS", s)]["evals"]["mix"]["psnr"]
                - files[("1-BS", s)]["evals"]["mix"]["psnr"] for s in (0, 1)])
  assert [float(x) for x in pair["delta_psnr"].split(";")] == pytest.approx(d, abs=1e-9)
  assert float(pair["delta_psnr_std"]) == pytest.approx(d.std(ddof=1), abs=1e-9)
  assert pair["better_in"] == f"{int((d > 0).sum())}/2"
  md = (work / "ablation.md").read_text()
  assert "mix (frames 0.5, synthetic 0.5)" in md and "seeds 0, 1" in md and "4 of 4 runs" in md

  # Resume: nothing is trained again, and only a missing evaluation is made (again).
  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")

  evaluated = []
  real_eval = eval_lib.run

  def counted_eval(ckpt, data, *args, **kwargs):
    evaluated.append((ckpt, data))
    return real_eval(ckpt, data, *args, **kwargs)

  monkeypatch.setattr(train_lib, "train_and_evaluate", no_training)
  monkeypatch.setattr(eval_lib, "run", counted_eval)
  result_path = work / "S1-BS" / "seed1" / ablation.RESULT_FILE
  lost = json.loads(result_path.read_text())
  del lost["evals"][pairs]
  result_path.write_text(json.dumps(lost))
  again = ablation.run(config, str(work), **kw)
  assert all(r["resumed"] for r in again)
  assert evaluated == [(str(work / "S1-BS" / "seed1"), pairs)]
  for r in again:
    assert r["evals"] == files[(r["scheme"], r["seed"])]["evals"]  # Inference is deterministic.
  # The report alone, from the files, into another folder.
  out = tmp_path / "docs" / "experiments.md"
  ablation_report.write(str(work), str(out))
  assert out.read_text() == md and (tmp_path / "docs" / "ablation_pairs.csv").exists()

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
  no_ablation = _script("ablation_report", f"--workdir={tmp_path}")
  assert no_ablation.returncode == 2
  assert no_ablation.stderr.strip().splitlines() == [
      f"ablation_report.py: error: --workdir={tmp_path}: no ablation.json (not the workdir of "
      "python -m experiments.ablation)"]
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


def test_result_files_are_replaced_whole_or_not_at_all(tmp_path):
  """A write that fails half-way (here: a value JSON or CSV cannot hold) leaves the earlier
  file as it was and no temporary file beside it."""

  class Unprintable:
    def __str__(self):
      raise ValueError("not printable")

  result = tmp_path / "result.json"
  ablation._write_json(str(result), {"psnr": 30.0})  # pylint: disable=protected-access
  table = tmp_path / "table.csv"
  ablation_report._write_csv(str(table), ["a"], [{"a": 1}])  # pylint: disable=protected-access
  before = {p: p.read_bytes() for p in (result, table)}
  assert json.loads(before[result]) == {"psnr": 30.0}
  with pytest.raises(TypeError):
    ablation._write_json(str(result), {"psnr": 31.0, "bad": object()})  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="not printable"):
    ablation_report._write_csv(str(table), ["a"], [{"a": 2}, {"a": Unprintable()}])  # pylint: disable=protected-access
  assert {p: p.read_bytes() for p in (result, table)} == before
  assert sorted(os.listdir(tmp_path)) == ["result.json", "table.csv"]


def _brightness_test_images():
  """A sharp ``uint8`` image with room for +2 grey levels, and a Gaussian blur of it."""
  sharp = (np.asarray(skimage.data.astronaut()[100:164, 120:184], np.float64) * 0.8 + 20)
  blurred = ndimage.gaussian_filter(sharp, (1.5, 1.5, 0))
  return sharp.astype(np.uint8), np.round(blurred).astype(np.uint8)


def test_what_changed_figures_follow_their_definitions():
  sharp, blurred = _brightness_test_images()
  # A brightness bias of 2 grey levels: the offset, no added detail, the same high-frequency
  # error (a constant is all low frequency) and a worse low-frequency one.
  r = what_changed.compare(blurred, blurred + 2, sharp)
  assert r["offset out"] == pytest.approx(2.0)
  assert r["offset sharp"] == pytest.approx(
      np.mean(sharp.astype(np.float64) - blurred.astype(np.float64)))
  assert r["detail out"] == pytest.approx(1.0)
  assert r["detail sharp"] > 1.5  # A blur of sigma 1.5 removes most of the Laplacian.
  assert r["high out"] == pytest.approx(r["high in"], abs=1e-6)
  assert r["low out"] < r["low in"]
  # A perfect restoration: the target's offset and detail, no error left.
  r = what_changed.compare(blurred, sharp, sharp)
  assert r["offset out"] == pytest.approx(r["offset sharp"])
  assert r["detail out"] == pytest.approx(r["detail sharp"])
  assert min(r["low out"], r["high out"]) >= 100
  with pytest.raises(UserError, match="sizes differ"):
    what_changed.compare(blurred, sharp[:10], sharp)


@pytest.mark.slow
def test_what_changed_prints_a_row_per_pair_and_names_a_missing_output(tmp_path):
  sharp, blurred = _brightness_test_images()
  for sub, img in (("pairs/blur", blurred), ("pairs/sharp", sharp), ("restored", blurred + 2)):
    os.makedirs(tmp_path / sub)
    save_image(tmp_path / sub / "a.png", img)
  args = (f"--pairs={tmp_path / 'pairs'}", f"--restored={tmp_path / 'restored'}")
  r = _script("what_changed", *args)
  assert r.returncode == 0, r.stderr[-2000:]
  header, row, mean = r.stdout.splitlines()
  assert header.split()[0] == "image" and row.split()[0] == "a.png"
  assert mean.split()[0] == "mean" and float(mean.split()[1]) == pytest.approx(2.0, abs=1e-3)
  os.remove(tmp_path / "restored" / "a.png")
  r = _script("what_changed", *args)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      f"what_changed.py: error: --restored: no {tmp_path / 'restored' / 'a.png'} for pair "
      f"a.png; run evaluate.py --data=folder:{tmp_path / 'pairs'} --out=OUT and pass "
      "OUT/restored"]
  # A restored image of another size: the error names the pair and the file.
  save_image(tmp_path / "restored" / "a.png", blurred[:32])
  with pytest.raises(UserError, match=r"^pair a\.png and .*restored/a\.png: sizes differ"):
    what_changed.table(str(tmp_path / "pairs"), str(tmp_path / "restored"))


def test_brightness_gap_of_pairs_and_of_linear_light_blur(tmp_path):
  sharp = skimage.data.camera()[:96, :128, None].repeat(3, -1) // 2 + 40  # No clipping at +3.
  for sub, img in (("blur", sharp + 3), ("sharp", sharp)):
    os.makedirs(tmp_path / sub)
    save_image(tmp_path / sub / "a.png", img)
  np.testing.assert_allclose(brightness_gap.pair_gaps(str(tmp_path)), [3.0])
  r = _script("brightness_gap", "--config=configs/tiny.py", "--crops=2", f"--pairs={tmp_path}")
  assert r.returncode == 0, r.stderr[-2000:]
  rows = [line.split() for line in r.stdout.splitlines()[1:]]
  assert rows[0][:2] == ["training:", "synthetic"] and rows[0][2] == "2"
  assert rows[1][:3] == ["pairs:", str(tmp_path), "1"] and float(rows[1][3]) == 3.0
  # Blurring the stored values keeps the mean (up to borders and rounding); blurring in
  # linear light takes a power mean of order gamma > 1 under the kernel, which is larger.
  from biskip_jax.data.datasets import synthetic  # pylint: disable=g-import-not-at-top
  gaps = {g: brightness_gap.source_gaps(
      synthetic.SyntheticSource(["skimage:camera"], num_examples=8, seed=0, split="train",
                                kernel_size=15, noise_std=0.0, gamma=g), 8, 96, 0)
          for g in (1.0, 2.2)}
  assert abs(gaps[1.0].mean()) < 0.3
  assert np.all(gaps[2.2] >= gaps[1.0] - 0.01) and gaps[2.2].mean() > gaps[1.0].mean() + 0.5


def test_brightness_gap_lists_each_source_of_a_mix(tmp_path):
  config = tiny.get_config()
  config.data.source = "mix"
  config.data.mix.synthetic = 1.0
  assert [n for n, _ in brightness_gap.training_sources(config)] == ["synthetic"]
  config.data.source = "synthetic"
  (name, source), = brightness_gap.training_sources(config)
  assert name == "synthetic" and source.split == "train"


def test_average_weights_is_the_mean_of_the_model_files(workdir, tmp_path):
  """Reference: numpy's mean of the two files' stored arrays, key by key."""
  _, config, variables = workdir
  shifted = jax.tree_util.tree_map(lambda x: np.asarray(x) * 3 + 1, variables)
  a = pretrained.export(config, variables, name="a", directory=str(tmp_path))[0]
  b = pretrained.export(config, shifted, name="b", directory=str(tmp_path))[0]
  out = str(tmp_path / "soup" / "ab.npz")
  r = _script("average_weights", f"--out={out}", a, b)
  assert r.returncode == 0, r.stderr
  with np.load(a) as fa, np.load(b) as fb, np.load(out) as fo:
    assert sorted(fo.files) == sorted(fa.files)
    for k in fa.files:
      np.testing.assert_allclose(fo[k], (fa[k] + fb[k]) / 2, rtol=1e-6, atol=1e-7)
  loaded_config, _, step = loading.load_generator(out)
  assert loaded_config.model == config.model and step is None
  meta = json.load(open(out[:-len(".npz")] + ".json"))
  assert [s["ckpt"] for s in meta["provenance"]["average_of"]] == ["a.npz", "b.npz"]


def test_average_weights_refuses_other_networks_in_one_line(workdir, tmp_path):
  _, config, variables = workdir
  a = pretrained.export(config, variables, name="a", directory=str(tmp_path))[0]
  other = config.copy_and_resolve_references()  # The same arrays, another network's config.
  other.model.zero_residual = not config.model.zero_residual
  b = pretrained.export(other, variables, name="b", directory=str(tmp_path))[0]
  with pytest.raises(UserError, match="b.npz: its model section differs from .*a.npz"):
    average_weights.average([a, b], str(tmp_path / "ab.npz"))
  with pytest.raises(UserError, match="at least two"):
    average_weights.average([a], str(tmp_path / "ab.npz"))


def test_residual_gain_scales_what_the_model_adds(workdir, tmp_path):
  """Reference: the formula b + a (G(b) - b) on the model's own output, a = 1.5."""
  path, config, variables = workdir
  a = pretrained.export(config, variables, name="a", directory=str(tmp_path))[0]
  out = str(tmp_path / "gain" / "a15.npz")
  r = _script("residual_gain", "--gain=1.5", f"--out={out}", a)
  assert r.returncode == 0, r.stderr
  image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
  x = image.astype(np.float32) / 127.5 - 1.0
  g1 = full_resolution.Deblurrer.load(a).restore_float(image)
  g15 = full_resolution.Deblurrer.load(out).restore_float(image)
  assert np.abs(g1 - x).mean() > 0.01  # The residual is not trivially zero.
  np.testing.assert_allclose(g15, x + 1.5 * (g1 - x), atol=2e-5)
  meta = json.load(open(out[:-len(".npz")] + ".json"))
  assert meta["provenance"]["residual_gain"] == 1.5
  with pytest.raises(UserError, match="--gain=nan"):
    residual_gain.scale_residual(a, float("nan"), out)
  r = _script("residual_gain", "--gain=2", f"--out={tmp_path / 'x.npz'}", a, a)
  assert r.returncode != 0 and "name one model" in r.stderr


def _scores(pairs, frames, photos, sharp):
  return {"pairs": pairs, "frames": frames, "photos": photos, "sharp": sharp,
          **{f"blurred:{s}": 20.0 for s in shipping_rule.SETS}}


def test_shipping_rule_verdicts_follow_the_written_rule():
  """The rule of docs/model_runs.md: above the current file on every set (a tie fails) and
  every sharp input back at 35 dB or more; of those that pass, the largest summed gain."""
  current = _scores(24.45, 26.744, 20.944, [("a.png", 36.2)])
  small = _scores(24.46, 26.754, 20.954, [("a.png", 35.0), ("b.png", 60.0)])
  large = _scores(24.55, 26.844, 21.044, [("a.png", 35.5)])
  tie = _scores(24.45, 27.0, 21.0, [("a.png", 40.0)])
  dark = _scores(25.0, 27.0, 21.0, [("a.png", 50.0), ("b.png", 34.99)])
  assert shipping_rule.failures(current, small) == []
  assert shipping_rule.failures(current, tie) == ["pairs 24.450 <= 24.450"]
  assert shipping_rule.failures(current, dark) == ["sharp input b.png at 34.99 dB < 35"]
  text = shipping_rule.report("cur", current, {"small": small, "large": large, "tie": tie})
  assert text.splitlines()[-1] == "choice: large (+0.300 dB summed over the sets)"
  assert "small: ships" in text and "tie: does not ship: pairs" in text
  text = shipping_rule.report("cur", current, {"tie": tie, "dark": dark})
  assert text.splitlines()[-1] == "choice: none; cur stays"


def test_shipping_rule_scores_as_evaluate_does(workdir, tmp_path):
  """Reference: evaluate.py's protocol (eval_lib.run) on each set, and a model whose residual
  is zero, which must give every input back (its PSNR is the blurred input's)."""
  _, config, variables = workdir
  mix, pairs = _tiny_mix(tmp_path)
  mix.data.synthetic.num_eval = 1
  sets = shipping_rule.validation_sets(mix.data, pairs.partition(":")[2],
                                       str(tmp_path / "frames"), str(tmp_path / "photos"))
  model = pretrained.export(config, variables, name="m", directory=str(tmp_path))[0]
  identity = residual_gain.scale_residual(model, 0.0, str(tmp_path / "identity.npz"))[0]
  got = shipping_rule.score(model, sets)
  for name, (data, data_config) in sets.items():
    ref = eval_lib.run(model, data, None, saliency=False, data_config=data_config)
    assert got[name] == pytest.approx(ref["psnr"], abs=1e-9), name
    assert got[f"blurred:{name}"] == pytest.approx(ref["blurred_psnr"], abs=1e-9), name
  assert len(got["sharp"]) == 1 + 2 + 1  # One pair, two held-out windows, one photo.
  same = shipping_rule.score(identity, sets)
  for name in shipping_rule.SETS:
    assert same[name] == pytest.approx(same[f"blurred:{name}"], abs=1e-9), name
  assert min(p for _, p in same["sharp"]) > 60
  lines = shipping_rule.report(model, got, {identity: same}).splitlines()
  blurred_row, identity_row = lines[1], lines[3]
  assert identity_row.split()[1:4] == blurred_row.split()[1:4]
  r = _script("shipping_rule", "--pairs=p", "--frames=f", "--photos=x")
  assert r.returncode != 0 and "name at least one candidate model" in r.stderr
