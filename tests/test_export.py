"""Export to StableHLO and ONNX: the artifacts against the JAX model they came from."""

import errno
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from biskip_jax import output_files
from biskip_jax.errors import UserError
from biskip_jax.inference import export_lib
from biskip_jax.nn import models
from configs import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two batches and two sizes (multiples of 32) through one exported artifact.
SHAPES = [(1, 32, 64, 3), (3, 64, 32, 3)]


def _inputs(shape, seed=0):
  return np.asarray(jax.random.uniform(jax.random.key(seed), shape, jnp.float32, -1.0, 1.0))


def _reference(config, variables, x):
  """The JAX model itself, jitted: what the exported file must compute."""
  model = models.generator_from_config(config.model)
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))


@pytest.fixture(scope="module")
def stablehlo(workdir, tmp_path_factory):
  path, _, _ = workdir
  out = str(tmp_path_factory.mktemp("export") / "g.stablehlo")
  return out, export_lib.export(path, "stablehlo", out)


@pytest.mark.slow
def test_stablehlo_reloads_and_equals_the_jax_model(workdir, stablehlo):
  _, config, variables = workdir
  out, meta = stablehlo
  with open(out, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  assert str(exported.in_avals[0]) == "float32[b,32*h,32*w,3]"
  assert str(exported.out_avals[0]) == "float32[b,32*h,32*w,3]"
  for shape in SHAPES:
    x = _inputs(shape)
    np.testing.assert_allclose(np.asarray(exported.call(x)), _reference(config, variables, x),
                               rtol=0, atol=1e-5)
  with open(out + ".json") as f:
    assert json.load(f) == meta
  assert meta["input"]["shape"] == ["b", "32*h", "32*w", 3]
  assert meta["source"]["step"] == 5 and meta["input"]["range"] == [-1.0, 1.0]


def test_stablehlo_refuses_sides_that_are_not_multiples_of_32(stablehlo):
  out, _ = stablehlo
  with open(out, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with pytest.raises(ValueError, match="32"):
    exported.call(_inputs((1, 48, 64, 3)))


def _onnx_outputs(data, x):
  session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
  assert [i.name for i in session.get_inputs()] == ["x"]
  return session.run(["y"], {"x": x})[0]


@pytest.mark.slow
def test_onnx_in_onnxruntime_equals_the_jax_model(workdir, tmp_path):
  path, config, variables = workdir
  out = str(tmp_path / "g.onnx")
  meta = export_lib.export(path, "onnx", out)
  model = onnx.load(out)
  onnx.checker.check_model(model)
  dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
  assert dims == ["b", "32*h", "32*w", 3]
  props = {p.key: json.loads(p.value) for p in model.metadata_props}
  assert props["biskip_io"]["input"] == meta["input"]
  with open(out, "rb") as f:
    data = f.read()
  for shape in SHAPES:  # Batch norm (running statistics): the same arithmetic, to rounding.
    x = _inputs(shape)
    np.testing.assert_allclose(_onnx_outputs(data, x), _reference(config, variables, x),
                               rtol=0, atol=1e-5)


@pytest.mark.slow
def test_onnx_with_instance_norm_equals_the_jax_model():
  """The shipped model's norm. onnxruntime computes the statistics in another order."""
  config = tiny.get_config("SA1-BS")
  config.model.norm = "instance"
  model = models.generator_from_config(config.model)
  # Random weights of the right shapes (compiling model.init took a minute on a busy CPU).
  shapes = jax.eval_shape(model.init, jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(1)
  variables = jax.tree_util.tree_map(
      lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  fn, multiple = export_lib.generator_fn(config, variables, export_lib.ONNX_CONV_PLATFORM)
  data = export_lib.export_onnx(fn, multiple).SerializeToString()
  for shape in SHAPES:
    x = _inputs(shape, seed=2)
    np.testing.assert_allclose(_onnx_outputs(data, x), _reference(config, variables, x),
                               rtol=0, atol=1e-4)


def test_user_mistakes_are_user_errors(workdir, tmp_path, monkeypatch):
  path, _, _ = workdir
  with pytest.raises(UserError, match="--format=tflite: expected one of stablehlo, onnx"):
    export_lib.export(path, "tflite", str(tmp_path / "g"))
  with pytest.raises(UserError, match="does not exist"):
    export_lib.export(str(tmp_path / "nope"), "stablehlo", str(tmp_path / "g"))
  with pytest.raises(UserError, match="must name a file"):
    export_lib.export(path, "stablehlo", str(tmp_path))
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  with pytest.raises(UserError, match=r"--out .*a_file/g: cannot create the folder \(.*a_file "
                     r"is a file\)"):
    export_lib.export(path, "stablehlo", str(blocker / "g"))
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # As if not installed.
  with pytest.raises(UserError, match=r"needs jax2onnx, not installed: pip install -e '.\[export"):
    export_lib.export(path, "onnx", str(tmp_path / "g.onnx"))
  assert sorted(os.listdir(tmp_path)) == ["a_file"]  # Nothing half-written left behind.


class _FullDisk:
  """A file on a disk that fills up halfway through the first write."""

  def __init__(self, f):
    self._f = f

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()

  def write(self, data):
    self._f.write(data[:len(data) // 2])
    self._f.flush()
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
def test_a_full_disk_keeps_the_earlier_export_and_is_one_line(workdir, tmp_path, monkeypatch):
  path, _, _ = workdir
  out = str(tmp_path / "g.stablehlo")
  # What is written is tested above; here only how it is written.
  monkeypatch.setattr(export_lib, "serialize", lambda *args: b"the first export " * 1000)
  export_lib.export(path, "stablehlo", out)
  before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
  monkeypatch.setattr(export_lib, "serialize", lambda *args: b"the second export " * 1000)
  fdopen = os.fdopen
  monkeypatch.setattr(output_files.os, "fdopen", lambda fd, *a, **k: _FullDisk(fdopen(fd, *a,
                                                                                     **k)))
  with pytest.raises(UserError) as e:
    export_lib.export(path, "stablehlo", out)
  assert str(e.value) == f"--out {out}: cannot write {out} (No space left on device)"
  after = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
  assert after.keys() == before.keys()  # No partial file left.
  assert after[".export_outputs.jsonl"].startswith(before[".export_outputs.jsonl"])
  assert {k: v for k, v in after.items() if not k.endswith(".jsonl")} == {
      k: v for k, v in before.items() if not k.endswith(".jsonl")}


def test_export_never_replaces_a_file_it_did_not_write(tmp_path):
  mine = tmp_path / "model.onnx"
  mine.write_bytes(b"the user's model")
  os.symlink(tmp_path / "elsewhere", tmp_path / "link.onnx")
  for out, why in ((mine, "exists and was not written by an export run"), (tmp_path / "link.onnx",
                                                                       "is a link")):
    # Refused before the (missing) checkpoint is looked at: nothing is loaded or converted.
    with pytest.raises(UserError) as e:
      export_lib.export(str(tmp_path / "no_such_run"), "stablehlo", str(out))
    assert str(e.value).startswith(f"--out {out}: {out} {why}; it is left as it is"), e.value
  assert mine.read_bytes() == b"the user's model"
  assert sorted(os.listdir(tmp_path)) == ["link.onnx", "model.onnx"]


@pytest.mark.slow
def test_export_py_writes_the_file_and_errs_in_one_line(workdir, tmp_path):
  path, _, _ = workdir
  run = lambda *args: subprocess.run([sys.executable, "export.py", *args], cwd=ROOT,
                                     capture_output=True, text=True, timeout=600)
  r = run(f"--ckpt={path}", "--format=stablehlo", f"--out={tmp_path / 'g.shlo'}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.startswith(f"wrote {tmp_path / 'g.shlo'} (stablehlo, input x [b, 32*h, ")
  assert sorted(os.listdir(tmp_path)) == [".export_outputs.jsonl", "g.shlo", "g.shlo.json"]
  r = run(f"--ckpt={tmp_path / 'nope'}", "--format=onnx", f"--out={tmp_path / 'g.onnx'}")
  assert r.returncode == 2 and r.stderr.strip() == (
      f"export.py: error: --ckpt {tmp_path / 'nope'} does not exist"), r.stderr[-3000:]
