"""Tests for the shipped model: export, checksum-verified load, deblur.py without --ckpt."""

import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import skimage.data

from biskip_jax.data.datasets import load_image, save_image
from biskip_jax.errors import UserError
from biskip_jax.inference import full_resolution, loading, pretrained, shipping
from biskip_jax.nn import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.isfile(pretrained.paths()[0])


def _photo(h=40, w=56):
  return np.ascontiguousarray(skimage.data.chelsea()[60:60 + h, 100:100 + w])


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
  """The tiny run of conftest's ``workdir`` exported as a shipped model."""
  path, config, variables = workdir
  directory = str(tmp_path_factory.mktemp("shipped"))
  pretrained.export(config, variables, name="tiny", directory=directory,
                    provenance={"step": 5})
  return directory, path


@pytest.mark.slow
def test_export_holds_the_generator_only_and_loads_equal(exported):
  directory, run = exported
  npz_path, json_path = pretrained.paths("tiny", directory)
  with np.load(npz_path, allow_pickle=False) as data:
    keys = list(data.files)
  assert keys and all(k.split("/")[0] in ("params", "batch_stats") for k in keys)
  meta = json.load(open(json_path))
  assert meta["bytes"] == os.path.getsize(npz_path)
  # An independent checksum of the file.
  assert meta["sha256"] == hashlib.sha256(open(npz_path, "rb").read()).hexdigest()
  config, variables, _ = pretrained.read_verified("tiny", directory)
  d_shipped = full_resolution.Deblurrer(config, variables)
  d_run = full_resolution.Deblurrer.from_checkpoint(run)
  img = _photo()
  np.testing.assert_array_equal(d_shipped(img), d_run(img))
  assert not np.array_equal(d_shipped(img), img)  # The tiny model is not the identity.


def _strings(tree):
  if isinstance(tree, dict):
    return [s for v in tree.values() for s in _strings(v)]
  if isinstance(tree, list):
    return [s for v in tree for s in _strings(v)]
  return [tree] if isinstance(tree, str) else []


def test_export_keeps_no_folder_of_the_training_machine(workdir, tmp_path):
  _, config, variables = workdir
  config = config.copy_and_resolve_references()
  config.data.synthetic.images = str(tmp_path / "data" / "photos") + os.sep
  config.data.frames.path = str(tmp_path / "frames")
  runs = [{"workdir": str(tmp_path / "runs" / "r1"), "steps": 3}]
  _, json_path = pretrained.export(config, variables, name="t", directory=str(tmp_path / "m"),
                                   provenance={"runs": runs, "step": 3})
  meta = json.load(open(json_path))
  assert meta["provenance"] == {"runs": [{"workdir": "r1", "steps": 3}], "step": 3}
  assert meta["config"]["data"]["synthetic"]["images"] == "photos"
  assert meta["config"]["data"]["frames"]["path"] == "frames"
  assert not any(os.path.isabs(s) for s in _strings(meta))
  # The config still reads back as the run's model.
  assert pretrained.read_verified("t", str(tmp_path / "m"))[0].model == config.model
  if SHIPPED:
    assert not any(os.path.isabs(s) for s in _strings(json.load(open(pretrained.paths()[1]))))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_npz", "delete_json",
                                    "bad_json", "wrong_shape"])
def test_damaged_shipped_model_is_one_clear_error(exported, tmp_path, damage):
  src, _ = exported
  directory = str(tmp_path)
  for f in os.listdir(src):
    with open(os.path.join(src, f), "rb") as a, open(os.path.join(directory, f), "wb") as b:
      b.write(a.read())
  npz_path, json_path = pretrained.paths("tiny", directory)
  if damage == "truncate":
    with open(npz_path, "r+b") as f:
      f.truncate(os.path.getsize(npz_path) // 2)
  elif damage == "flip":
    data = bytearray(open(npz_path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(npz_path, "wb").write(bytes(data))
  elif damage == "delete_npz":
    os.remove(npz_path)
  elif damage == "delete_json":
    os.remove(json_path)
  elif damage == "bad_json":
    open(json_path, "w").write("{not json")
  else:  # A valid, checksummed file for another width: the config no longer matches.
    meta = json.load(open(json_path))
    meta["config"]["model"]["channels"] = [8, 8, 8, 8, 8]
    json.dump(meta, open(json_path, "w"))
  with pytest.raises(UserError) as e:
    pretrained.read_verified("tiny", directory)
  msg = str(e.value)
  assert "\n" not in msg and "biskip_jax/inference/pretrained/" in msg
  assert (json_path if damage in ("delete_json", "bad_json") else npz_path) in msg



@pytest.mark.skipif(not SHIPPED, reason="no shipped model in biskip_jax/inference/pretrained/")
@pytest.mark.slow
def test_shipped_model_verifies_and_leaves_a_sharp_photo_alone():
  npz_path, _ = pretrained.paths()
  assert os.path.getsize(npz_path) <= 25 * 10**6  # The shipped model's size limit.
  d = full_resolution.Deblurrer.pretrained()
  # The paper's full-width generator.
  assert tuple(d.config.model.channels) == (32, 64, 128, 128, 128)
  assert d.config.model.variant == "BS" and models.count_params(d.variables["params"]) > 6e6
  sharp = np.ascontiguousarray(skimage.data.chelsea()[:128, :160])
  out = d(sharp)
  mse = np.mean((out.astype(np.float64) - sharp) ** 2)
  assert 10 * np.log10(255.0 ** 2 / max(mse, 1e-10)) >= 35.0  # A sharp photo stays sharp.


@pytest.mark.skipif(not SHIPPED, reason="no shipped model in biskip_jax/inference/pretrained/")
@pytest.mark.slow
def test_deblur_py_without_ckpt_uses_the_shipped_model(tmp_path):
  photo = tmp_path / "photo.png"
  save_image(photo, _photo())
  # The README's `python deblur.py photo.jpg`: no --ckpt, no --out (default: ./deblurred/).
  r = subprocess.run([sys.executable, os.path.join(ROOT, "deblur.py"), str(photo)],
                     cwd=tmp_path, capture_output=True, text=True, timeout=600,
                     env=dict(os.environ, PYTHONPATH=ROOT))
  assert r.returncode == 0, r.stderr[-2000:]
  out = load_image(tmp_path / "deblurred" / "photo.png")
  assert out.shape == _photo().shape
  expected = full_resolution.Deblurrer.pretrained()(_photo())
  np.testing.assert_array_equal(out, expected)


def test_shipped_model_names_the_steps_of_every_run_behind_it():
  """The model card's lineage: 6000 steps of runs/pretrain, then 3000, 1500, 1250 and 2250
  steps warm-started from the shipped file, then 2000 from the last of them, then 2000 more
  warm-started from the shipped file."""
  _, json_path = pretrained.paths()
  with open(json_path) as f:
    provenance = json.load(f)["provenance"]
  assert [(r["workdir"], r["steps"]) for r in provenance["runs"]] == [
      ("runs/pretrain", 6000), ("runs/pretrain2", 3000), ("runs/pretrain7", 1500),
      ("runs/pretrain8", 1250), ("pretrain11", 2250), ("pretrain12", 2000),
      ("pretrain14", 2000)]
  assert [r.get("init_from") for r in provenance["runs"]] == (
      [None] + ["pretrained"] * 4 + ["pretrain11", "pretrained"])
  assert provenance["step"] == 18000
  with open(os.path.join(ROOT, "docs", "MODEL_CARD.md")) as f:
    assert "(18,000 steps in seven runs)" in f.read()


def test_lineage_of_a_warm_started_run(tmp_path):
  # A run without a warm start: itself.
  assert shipping.lineage(str(tmp_path), "runs/a", 40) == {
      "step": 40, "runs": [{"workdir": "runs/a", "steps": 40}]}
  # Warm-started from the shipped model: its runs first (read from its JSON at the start).
  with open(pretrained.paths()[1]) as f:
    shipped = json.load(f)["provenance"]  # Its runs: test_shipped_model_names_the_steps...
  child = tmp_path / "child"
  child.mkdir()
  shipping.record_init_from(str(child), "pretrained", None)
  assert shipping.lineage(str(child), "runs/child", 500) == {
      "step": shipped["step"] + 500,
      "runs": shipped["runs"] + [{"workdir": "runs/child", "steps": 500,
                                  "init_from": "pretrained"}]}
  # Warm-started from that run at its step 500: the chain goes on.
  grandchild = tmp_path / "grandchild"
  grandchild.mkdir()
  shipping.record_init_from(str(grandchild), str(child), 500)
  lineage = shipping.lineage(str(grandchild), "runs/grandchild", 7)
  assert [r["steps"] for r in lineage["runs"]] == [r["steps"] for r in shipped["runs"]] + [500, 7]
  assert lineage["runs"][-2] == {"workdir": str(child), "steps": 500, "init_from": "pretrained"}
  assert lineage["runs"][-1]["init_from"] == str(child)
  assert lineage["step"] == shipped["step"] + 507


def test_runs_behind_a_model_file_are_those_its_json_names(tmp_path):
  """A model file exported elsewhere (``--ckpt=PATH/NAME.npz``), with a one-run provenance."""
  with open(tmp_path / "gpu.json", "w") as f:
    json.dump({"provenance": {"source": "gpu_run", "step": 120}}, f)
  assert shipping.runs_behind(str(tmp_path / "gpu.npz"), None) == [
      {"workdir": "gpu_run", "steps": 120}]


def _model_json(config):
  return json.loads(config.model.to_json_best_effort())  # Tuples equal lists.


def _assert_same_arrays(got, want):
  flat = lambda tree: dict(jax.tree_util.tree_leaves_with_path(tree))
  got, want = flat(got), flat(want)
  assert got.keys() == want.keys()
  for k, v in want.items():
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(v), err_msg=str(k))


@pytest.mark.slow
def test_load_generator_takes_a_workdir_a_checkpoint_and_a_shipped_model(exported, workdir,
                                                                         monkeypatch):
  """The one loader of every program: the arrays conftest's run saved, from each place."""
  directory, run = exported
  _, config, variables = workdir
  for ckpt in (run, os.path.join(run, "checkpoints"), os.path.join(run, "checkpoints", "5")):
    got_config, got, step = loading.load_generator(ckpt)
    assert step == 5 and _model_json(got_config) == _model_json(config), ckpt
    _assert_same_arrays(got, variables)
  # A model file exported like the shipped one, by path and by name (None: the default name).
  monkeypatch.setattr(pretrained, "DIRECTORY", directory)
  monkeypatch.setattr(pretrained, "DEFAULT_NAME", "tiny")
  for ckpt in (os.path.join(directory, "tiny.npz"), "pretrained:tiny", "pretrained", None):
    got_config, got, step = loading.load_generator(ckpt)
    assert step == 5 and _model_json(got_config) == _model_json(config), ckpt
    _assert_same_arrays(got, variables)


def test_load_generator_names_a_missing_path_on_one_line(tmp_path):
  for missing in (tmp_path / "no_run", tmp_path / "no_model.npz",
                  tmp_path / "no_run" / "checkpoints" / "7"):
    with pytest.raises(UserError) as e:
      loading.load_generator(str(missing))
    assert str(e.value) == f"--ckpt {missing} does not exist"
  with pytest.raises(UserError) as e:
    loading.load_generator("pretrained:no_such_model")
  msg = str(e.value)
  assert "\n" not in msg and os.path.join(pretrained.DIRECTORY, "no_such_model.") in msg, msg


def test_one_shape_check_names_the_arrays_that_differ():
  want = {"params": {"a": np.zeros((3, 3)), "b": np.zeros(4)}, "batch_stats": {}}
  models.check_shapes({"params": {"a": np.ones((3, 3)), "b": np.ones(4)}}, want, "x")
  with pytest.raises(UserError) as e:
    models.check_shapes({"params": {"a": np.zeros((3, 2)), "c": np.zeros(1)}}, want,
                        "the file F", "get it again")
  assert str(e.value) == (
      "the file F does not fit the config's model (params/a has shape (3, 2), the model needs "
      "(3, 3); params/b is missing; params/c is not in the model): get it again")


@pytest.mark.slow
def test_export_run_writes_what_load_generator_reads_back(workdir, tmp_path):
  """The work of biskip-pretrained: a run's generator as a model file, its steps recorded."""
  run, _, variables = workdir
  npz_path, json_path, step, provenance = shipping.export_run(
      run, name="from_run", directory=str(tmp_path))
  assert (npz_path, json_path) == pretrained.paths("from_run", str(tmp_path))
  assert step == 5 and provenance == {"step": 5, "runs": [{"workdir": run, "steps": 5}]}
  _, got, got_step = loading.load_generator(npz_path)
  assert got_step == 5
  _assert_same_arrays(got, variables)
