"""Tests for biskip_jax.nn.vgg: the port matches PyTorch, files are read safely, weights are found.

No test touches the network: ``urllib.request.urlopen`` is replaced for every test, and the
download tests replace ``vgg_loading.download_file``.
"""

import hashlib
import io
import os
import pickle
import shutil
import urllib.error
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from biskip_jax.errors import UserError
from biskip_jax.nn import vgg, vgg_loading

_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
        512, 512, 512, 512, "M")


def _torch_features() -> torch.nn.Sequential:
  """torchvision's ``vgg19().features``, built by hand (same indices), random weights."""
  torch.manual_seed(0)
  layers, in_channels = [], 3
  for c in _CFG:
    if c == "M":
      layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [torch.nn.Conv2d(in_channels, c, kernel_size=3, padding=1), torch.nn.ReLU()]
      in_channels = c
  return torch.nn.Sequential(*layers).eval()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("tests must not use the network")
  monkeypatch.setattr(vgg_loading.urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def torch_vgg():
  return _torch_features()


@pytest.fixture(scope="module")
def state_dict(torch_vgg):
  """A state dict in torchvision's layout (``features.N.*`` plus a classifier key)."""
  sd = {f"features.{k}": v for k, v in torch_vgg.state_dict().items()}
  sd["classifier.0.weight"] = torch.zeros(4, 3)
  return sd


@pytest.fixture(scope="module")
def pth_path(state_dict, tmp_path_factory):
  path = tmp_path_factory.mktemp("weights") / "vgg19.pth"
  torch.save(state_dict, path)
  return str(path)


def _assert_params_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_layers_table():
  assert [layer.name for layer in vgg.LAYERS] == [
      "conv1_1", "conv1_2", "conv2_1", "conv2_2", *(f"conv3_{i}" for i in range(1, 5)),
      *(f"conv4_{i}" for i in range(1, 5)), *(f"conv5_{i}" for i in range(1, 5))]
  assert [layer.index for layer in vgg.LAYERS] == [
      0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
  assert [layer.channels for layer in vgg.LAYERS] == [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8
  convs = [i for i, m in enumerate(_torch_features()) if isinstance(m, torch.nn.Conv2d)]
  assert convs == [layer.index for layer in vgg.LAYERS]


def test_normalize_input():
  x = jnp.asarray([[[[-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]]]])  # [1, 1, 2, 3]
  out = np.asarray(vgg.normalize_input(x, "imagenet"))
  # ((x + 1) / 2 - mean) / std by hand: R (0 - .485) / .229, G (.5 - .456) / .224, ...
  expected = [[[[-2.1179039301, 0.1964285714, 2.6399999999],
                [2.2489082969, -2.0357142857, 0.4177777778]]]]
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  assert out.dtype == np.float32
  assert vgg.normalize_input(x, "raw") is x
  with pytest.raises(ValueError, match="imagenet"):
    vgg.normalize_input(x, "caffe")


@pytest.mark.slow
@pytest.mark.parametrize("layer,shape", [
    ("conv1_2", (1, 40, 48, 64)), ("conv2_1", (1, 20, 24, 128)), ("conv3_3", (1, 10, 12, 256)),
    ("conv4_4", (1, 5, 6, 512)), ("conv5_4", (1, 2, 3, 512))])
def test_features_match_pytorch(torch_vgg, pth_path, layer, shape):
  params = vgg_loading.port_torchvision_vgg19(pth_path, layer)
  x = np.random.default_rng(1).uniform(-2, 2, (1, 40, 48, 3)).astype(np.float32)
  with jax.default_matmul_precision("float32"):
    out = np.asarray(vgg.VGG19Features(layer=layer).apply(params, jnp.asarray(x)))
  index = next(spec.index for spec in vgg.LAYERS if spec.name == layer)
  with torch.no_grad():
    ref = torch_vgg[:index + 1](torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
  ref = ref.numpy().astype(np.float64)
  assert out.shape == ref.shape == shape
  assert (ref < 0).any()  # Before the ReLU.
  assert np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref) < 1e-5


def test_params_match_init_structure(pth_path):
  params = vgg_loading.port_torchvision_vgg19(pth_path, "conv3_3")
  shapes = jax.eval_shape(vgg.VGG19Features().init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes) == jax.tree.map(
      lambda a: (a.shape, a.dtype), params)
  assert list(params["params"]) == [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3))
                                    for i in range(1, n + 1)]
  assert len(vgg_loading.port_torchvision_vgg19(pth_path)["params"]) == 16


def test_unknown_layer():
  with pytest.raises(ValueError, match="conv3_3.*conv5_4"):
    vgg.VGG19Features(layer="conv6_1").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="valid layers"):
    vgg_loading.port_torchvision_vgg19({}, "relu3_3")
  with pytest.raises(ValueError, match="valid layers"):
    vgg_loading.load_vgg19_params(layer="pool5")


def test_npz_and_dict_ports_agree(state_dict, tmp_path):
  as_numpy = {k: v.numpy() for k, v in state_dict.items()}
  npz = tmp_path / "vgg19.npz"
  np.savez(npz, **as_numpy)
  from_dict = vgg_loading.port_torchvision_vgg19(state_dict)
  _assert_params_equal(from_dict, vgg_loading.port_torchvision_vgg19(as_numpy))
  _assert_params_equal(from_dict, vgg_loading.port_torchvision_vgg19(str(npz)))
  np.testing.assert_array_equal(from_dict["params"]["conv2_1"]["kernel"],
                                as_numpy["features.5.weight"].transpose(2, 3, 1, 0))


@pytest.mark.parametrize("zip_format", [True, False])
def test_port_without_torch_matches_torch_load(state_dict, tmp_path, zip_format):
  # A real state_dict() carries ``_metadata``; also a non-contiguous and a half tensor.
  sd = _torch_features().state_dict()
  sd = type(sd)((f"features.{k}", v) for k, v in sd.items())
  sd["features.0.weight"] = state_dict["features.0.weight"].permute(3, 2, 1, 0).contiguous() \
      .permute(3, 2, 1, 0)
  sd["extra.half"] = torch.ones(2, 2, dtype=torch.float16)
  path = tmp_path / "vgg19.pth"
  torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
  assert zipfile.is_zipfile(path) == zip_format
  with_torch = vgg_loading.port_torchvision_vgg19(str(path), use_torch=True)
  without = vgg_loading.port_torchvision_vgg19(str(path), use_torch=False)
  _assert_params_equal(with_torch, without)
  _assert_params_equal(with_torch, vgg_loading.port_torchvision_vgg19(state_dict))
  raw = vgg_loading._read_pth(str(path), use_torch=False)  # pylint: disable=protected-access
  np.testing.assert_array_equal(raw["extra.half"], np.ones((2, 2), np.float16))


def _write_2017_pth(path, arrays):
  """Writes ``arrays`` as torch 0.1.x did (torchvision's vgg19-dcbb9e9d.pth is from 2017):
  the legacy stream, ``_rebuild_tensor`` (not v2), and one storage that is a view of another."""
  class Ref:
    def __init__(self, key, numel, view=None):
      self.pid = ("storage", torch.FloatStorage, key, "cpu", numel, view)

  class Tensor:
    def __init__(self, ref, offset, size, stride):
      self.args = (ref, offset, size, stride)

    def __reduce__(self):
      return torch._utils._rebuild_tensor, self.args  # pylint: disable=protected-access

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return obj.pid if isinstance(obj, Ref) else None

  flat = [a.astype(np.float32).ravel() for a in arrays.values()]
  root = np.concatenate(flat)
  obj, start = {}, 0
  for (name, a), f in zip(arrays.items(), flat, strict=True):
    stride = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
    if name.endswith("bias"):  # Offset 0 into a view of the root storage.
      obj[name] = Tensor(Ref("1", root.size, (f"view{start}", start, f.size)), 0, a.shape, stride)
    else:
      obj[name] = Tensor(Ref("1", root.size), start, a.shape, stride)
    start += f.size
  buf = io.BytesIO()
  for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
    pickle.dump(header, buf, protocol=2)
  Pickler(buf, protocol=2).dump(obj)
  pickle.dump(["1"], buf, protocol=2)
  buf.write(np.int64(root.size).tobytes() + root.tobytes())
  path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("use_torch", [True, False])
def test_port_2017_legacy_file(state_dict, tmp_path, use_torch):
  arrays = {k: v.numpy() for k, v in state_dict.items() if k.startswith("features.")}
  path = tmp_path / "vgg19-2017.pth"
  _write_2017_pth(path, arrays)
  _assert_params_equal(vgg_loading.port_torchvision_vgg19(str(path), use_torch=use_torch),
                       vgg_loading.port_torchvision_vgg19(arrays))


class _Payload:
  """Pickles to a call of ``func(arg)`` at load time."""

  def __init__(self, func, arg):
    self.func, self.arg = func, arg

  def __reduce__(self):
    return self.func, (self.arg,)


def _malicious_files(tmp_path, pth_path, marker):
  payloads = [_Payload(os.system, f"touch {marker}"),
              _Payload(eval, f"open({str(marker)!r}, 'w').close()")]
  files = []
  for i, payload in enumerate(payloads):
    evil = pickle.dumps({"features.0.weight": payload}, protocol=2)
    # Torch's zip layout, with the genuine storages and only data.pkl replaced.
    zipped = tmp_path / f"evil{i}.pth"
    with zipfile.ZipFile(pth_path) as src, zipfile.ZipFile(zipped, "w") as dst:
      for name in src.namelist():
        dst.writestr(name, evil if name.endswith("/data.pkl") else src.read(name))
    legacy = tmp_path / f"evil_legacy{i}.pth"  # torch < 1.6's layout starts with pickles.
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + evil)
    files += [zipped, legacy]
  return files


@pytest.mark.parametrize("use_torch", [True, False])
def test_malicious_pth_refused(tmp_path, pth_path, use_torch):
  marker = tmp_path / "pwned"
  for path in _malicious_files(tmp_path, pth_path, marker):
    with pytest.raises(UserError, match=str(path)):
      vgg_loading.port_torchvision_vgg19(str(path), use_torch=use_torch)
    assert not marker.exists()


def test_restricted_unpickler_refuses_globals(tmp_path):
  path = tmp_path / "globals.pth"
  path.write_bytes(pickle.dumps(shutil.rmtree, protocol=2))
  with pytest.raises(UserError, match="refusing to load global shutil.rmtree"):
    vgg_loading.port_torchvision_vgg19(str(path), use_torch=False)


def test_missing_keys_and_wrong_shapes(state_dict, pth_path):
  partial = {k: v for k, v in state_dict.items() if not k.startswith("features.34.")}
  vgg_loading.port_torchvision_vgg19(partial, "conv5_3")  # conv5_4 isn't needed.
  with pytest.raises(UserError, match=r"<state dict> has no 'features.34.weight'"):
    vgg_loading.port_torchvision_vgg19(partial)
  wrong = dict(state_dict, **{"features.2.weight": torch.zeros(64, 64, 1, 1)})
  with pytest.raises(UserError, match="conv1_2"):
    vgg_loading.port_torchvision_vgg19(wrong)
  with pytest.raises(UserError, match="not-there.npz"):
    vgg_loading.port_torchvision_vgg19("/not-there.npz")


def test_given_weights_file(pth_path, tmp_path):
  _assert_params_equal(vgg_loading.load_vgg19_params(pth_path, "conv2_2", cache_dir=str(tmp_path)),
                       vgg_loading.port_torchvision_vgg19(pth_path, "conv2_2"))
  missing = str(tmp_path / "nope.pth")
  with pytest.raises(UserError, match=f"loss.vgg_weights.*{missing}"):
    vgg_loading.load_vgg19_params(missing)


def test_download_failure_is_a_user_error(monkeypatch, tmp_path):
  def fail(url, dest):
    raise urllib.error.URLError("no network")
  monkeypatch.setattr(vgg_loading, "download_file", fail)
  with pytest.raises(UserError) as e:
    vgg_loading.load_vgg19_params(cache_dir=str(tmp_path))
  message = str(e.value)
  assert vgg_loading.TORCHVISION_VGG19_URL in message
  assert "--config.loss.vgg_weights=" in message
  assert "never falls back to random" in message
  assert os.listdir(tmp_path) == []
  with pytest.raises(UserError, match="downloading is off"):
    vgg_loading.load_vgg19_params(cache_dir=str(tmp_path), download=False)


def test_checksum_mismatch(monkeypatch, tmp_path, pth_path):
  monkeypatch.setattr(vgg_loading, "download_file", lambda url, dest: shutil.copy(pth_path, dest))
  with pytest.raises(UserError, match="Checksum mismatch.*dcbb9e9d"):
    vgg_loading.load_vgg19_params(cache_dir=str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_download_and_cache_round_trip(monkeypatch, tmp_path, pth_path):
  with open(pth_path, "rb") as f:
    monkeypatch.setattr(vgg_loading, "TORCHVISION_VGG19_SHA256_PREFIX",
                        hashlib.sha256(f.read()).hexdigest()[:8])
  calls = []

  def fake_download(url, dest):
    calls.append(url)
    shutil.copy(pth_path, dest)
  monkeypatch.setattr(vgg_loading, "download_file", fake_download)
  monkeypatch.setenv("BISKIP_JAX_CACHE", str(tmp_path))
  first = vgg_loading.load_vgg19_params(layer="conv2_1")
  assert calls == [vgg_loading.TORCHVISION_VGG19_URL]
  assert os.listdir(tmp_path) == ["vgg19_conv2_1.npz"]  # The raw download is gone.
  _assert_params_equal(first, vgg_loading.port_torchvision_vgg19(pth_path, "conv2_1"))
  second = vgg_loading.load_vgg19_params(layer="conv2_1")
  assert len(calls) == 1
  _assert_params_equal(first, second)


def test_download_file(monkeypatch, tmp_path):
  class Response(io.BytesIO):
    headers = {"Content-Length": "3000000"}
  monkeypatch.setattr(vgg_loading.urllib.request, "urlopen",
                      lambda url, timeout: Response(b"x" * 3_000_000))
  vgg_loading.download_file("https://example.invalid/w.pth", str(tmp_path / "w.pth"))
  assert (tmp_path / "w.pth").read_bytes() == b"x" * 3_000_000
