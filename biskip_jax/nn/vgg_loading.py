"""VGG19 ImageNet weights for :mod:`biskip_jax.nn.vgg` (paper §4.2, DESIGN §4).

``port_torchvision_vgg19`` converts a torchvision state dict (``.pth``, ``.npz`` or in memory)
into ``VGG19Features`` params; reading a ``.pth`` never runs code from the file, with or without
torch installed. ``load_vgg19_params`` is what training calls: a given file, else a cached port,
else torchvision's weights downloaded once and checked against their sha256. It never falls
back to random weights.
"""

import collections
import http.client
import importlib.util
import os
import pickle
import struct
import tempfile
import urllib.request
import zipfile
from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np

from biskip_jax.errors import UserError
from biskip_jax.nn.vgg import LAYER_NAMES, layers_up_to
from biskip_jax.output_files import atomic_write, sha256

TORCHVISION_VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
# torchvision names its files after the first hex digits of their sha256.
TORCHVISION_VGG19_SHA256_PREFIX = "dcbb9e9d"
_CONFIG_FIELD = "--config.loss.vgg_weights=/path/to/vgg19-dcbb9e9d.pth"
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}


class _Storage(NamedTuple):
  dtype: Any


def _rebuild_tensor(storage, offset, size, stride, *unused_args) -> np.ndarray:
  """Stands in for ``torch._utils._rebuild_tensor(_v2)``: a strided copy out of a storage."""
  size, stride, offset = tuple(map(int, size)), tuple(map(int, stride)), int(offset)
  if min((offset, *size, *stride)) < 0 or len(size) != len(stride):
    raise pickle.UnpicklingError(f"bad tensor layout {size}, {stride}, {offset}")
  if 0 in size:
    return np.zeros(size, storage.dtype)
  if offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= storage.size:
    raise pickle.UnpicklingError("tensor extends past its storage")
  return np.array(np.lib.stride_tricks.as_strided(
      storage[offset:], shape=size, strides=tuple(s * storage.dtype.itemsize for s in stride)))
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
    ("torch._utils", "_rebuild_parameter"): lambda data, *unused_args: data,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a state dict; any global outside a short allow-list is refused.

  Args:
    file: binary file positioned at a pickle.
    load_storage: ``(dtype, key, numel, view_metadata) -> storage`` for persistent ids.
    rebuild: called in place of ``torch._utils._rebuild_tensor(_v2)``.
  """

  def __init__(self, file, load_storage, rebuild=None):
    super().__init__(file, encoding="utf-8")
    self._load_storage = load_storage
    self._rebuild = rebuild or _rebuild_tensor

  def find_class(self, module, name):
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      return self._rebuild
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module in ("torch", "torch.cuda", "torch.storage") and name in _STORAGE_DTYPES:
      return _Storage(np.dtype(_STORAGE_DTYPES[name]))
    raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and isinstance(pid[1], _Storage)):
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
      raise pickle.UnpicklingError(f"unexpected persistent id type {typename!r}")
    view = pid[5] if len(pid) > 5 else None
    return self._load_storage(pid[1].dtype, str(pid[2]), int(pid[4]), view)


def _read_zip_pth(path: str) -> Any:
  """torch >= 1.6 format: a zip with ``<dir>/data.pkl`` and raw storages ``<dir>/data/<key>``."""
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
      raise pickle.UnpicklingError("no <dir>/data.pkl in the archive")
    prefix = pkl[0][:-len("data.pkl")]
    big = prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() == b"big"

    def load_storage(dtype, key, numel, unused_view):
      raw = archive.read(prefix + "data/" + key)
      return np.frombuffer(raw, dtype.newbyteorder(">" if big else "<"),
                           count=min(numel, len(raw) // dtype.itemsize))

    with archive.open(pkl[0]) as f:
      return _RestrictedUnpickler(f, load_storage).load()


class _StorageRef(NamedTuple):
  key: str
  start: int  # Elements; a legacy "view" of its root storage.
  length: int
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Deferred(NamedTuple):
  args: tuple


def _read_legacy_pth(path: str) -> Any:
  """torch < 1.6 format: pickles (magic, version, sys info, object, storage keys), then each
  storage as a little-endian int64 element count and its bytes. Tensors are rebuilt at the end,
  once the bytes they point to have been read."""
  dtypes = {}

  def load_storage(dtype, key, numel, view):
    dtypes[key] = dtype.newbyteorder("<")
    if view is None:
      return _StorageRef(key, 0, numel)
    return _StorageRef(key, int(view[1]), int(view[2]))

  with open(path, "rb") as f:
    if _RestrictedUnpickler(f, load_storage).load() != _LEGACY_MAGIC:
      raise pickle.UnpicklingError("not a PyTorch file")
    for _ in range(2):  # Protocol version, sys info.
      _RestrictedUnpickler(f, load_storage).load()
    obj = _RestrictedUnpickler(f, load_storage, rebuild=lambda *args: _Deferred(args)).load()
    data = {}
    for key in _RestrictedUnpickler(f, load_storage).load():
      dtype = dtypes[str(key)]
      (numel,) = struct.unpack("<q", f.read(8))
      data[str(key)] = np.frombuffer(f.read(numel * dtype.itemsize), dtype)

  def resolve(x):
    if isinstance(x, _Deferred):
      ref, *rest = x.args
      return _rebuild_tensor(data[ref.key][ref.start:ref.start + ref.length], *rest)
    if isinstance(x, dict):
      return collections.OrderedDict((k, resolve(v)) for k, v in x.items())
    return x

  return resolve(obj)


def _read_pth(path: str, use_torch: bool | None = None) -> Mapping[str, Any]:
  """Reads a torch state dict; with torch (``weights_only``) or with the restricted parser."""
  if use_torch is None:
    use_torch = importlib.util.find_spec("torch") is not None
  try:
    if use_torch:
      import torch  # pylint: disable=import-outside-toplevel
      state = torch.load(path, map_location="cpu", weights_only=True)
    elif zipfile.is_zipfile(path):
      state = _read_zip_pth(path)
    else:
      state = _read_legacy_pth(path)
  except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError,
          TypeError, AttributeError, IndexError, struct.error, zipfile.BadZipFile) as e:
    reason = str(e)  # torch's message wraps the reason in advice to drop weights_only.
    reason = reason.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
    raise UserError(f"Could not read {path} as a PyTorch state dict (files that would run "
                    f"code are refused): {' '.join(reason.split())}") from e
  if not isinstance(state, Mapping):
    raise UserError(f"{path} holds a {type(state).__name__}, not a state dict.")
  return state


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # A torch tensor.
    value = value.detach().cpu()
    value = value.float() if str(value.dtype) == "torch.bfloat16" else value
    return value.numpy()
  return np.asarray(value)


def port_torchvision_vgg19(path_or_state_dict: str | os.PathLike | Mapping[str, Any],
                           layer: str | None = None, *,
                           use_torch: bool | None = None) -> dict[str, Any]:
  """Converts torchvision's ``vgg19().state_dict()`` into ``VGG19Features`` params.

  Args:
    path_or_state_dict: a ``.pth`` or ``.npz`` file, or a dict of numpy arrays / torch tensors,
      with keys ``features.N.weight`` ([O, I, 3, 3]) and ``features.N.bias`` ([O]); other keys
      (the classifier) are ignored.
    layer: keep only the convs up to this one (all 16 if None).
    use_torch: read ``.pth`` with ``torch.load(weights_only=True)`` (True) or with the built-in
      restricted parser (False); None uses torch when it is installed.

  Returns:
    ``{"params": {"conv1_1": {"kernel": [3, 3, I, O], "bias": [O]}, ...}}``, numpy float32.
  """
  layers = layers_up_to(layer or LAYER_NAMES[-1])
  if isinstance(path_or_state_dict, Mapping):
    source, state = "<state dict>", path_or_state_dict
  else:
    source = os.fspath(path_or_state_dict)
    if source.endswith(".npz"):
      try:
        with np.load(source, allow_pickle=False) as npz:
          state = {k: npz[k] for k in npz.files}
      except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"Could not read {source} as an .npz of VGG19 weights: {e}") from e
    else:
      state = _read_pth(source, use_torch)
  params = {}
  for spec in layers:
    arrays = {}
    for kind in ("weight", "bias"):
      key = f"features.{spec.index}.{kind}"
      if key not in state:
        raise UserError(f"{source} has no {key!r}: not torchvision's vgg19 state dict.")
      arrays[kind] = _to_numpy(state[key]).astype(np.float32)
    weight, bias = arrays["weight"], arrays["bias"]
    if weight.ndim != 4 or weight.shape[0] != spec.channels or weight.shape[2:] != (3, 3) \
        or bias.shape != (spec.channels,):
      raise UserError(f"{source}: features.{spec.index} has shapes {weight.shape}, "
                      f"{bias.shape}; VGG19's {spec.name} needs ({spec.channels}, I, 3, 3).")
    params[spec.name] = {"kernel": np.ascontiguousarray(weight.transpose(2, 3, 1, 0)),
                         "bias": bias}
  return {"params": params}


def default_cache_dir() -> str:
  return os.environ.get("BISKIP_JAX_CACHE") or os.path.expanduser("~/.cache/biskip_jax")


def download_file(url: str, dest: str) -> None:
  """Downloads ``url`` to the file ``dest`` with a progress bar."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
    total = int(response.headers.get("Content-Length") or 0) or None
    with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url)) as bar:
      while chunk := response.read(1 << 20):
        out.write(chunk)
        bar.update(len(chunk))


def load_vgg19_params(weights: str = "", layer: str = "conv3_3", cache_dir: str | None = None,
                      download: bool = True) -> dict[str, Any]:
  """Returns ImageNet VGG19 params up to ``layer``: from ``weights``, the cache, or the web.

  Args:
    weights: path of torchvision's ``vgg19-dcbb9e9d.pth`` (or an ``.npz`` in its layout);
      empty to use the cache or download (config ``loss.vgg_weights``).
    layer: last conv needed.
    cache_dir: where ported weights are kept; default ``$BISKIP_JAX_CACHE`` or
      ``~/.cache/biskip_jax``.
    download: whether a missing cache may be filled from ``TORCHVISION_VGG19_URL``.
  """
  layers_up_to(layer)
  if weights:
    if not os.path.isfile(weights):
      raise UserError(f"loss.vgg_weights: no such file {weights!r}.")
    return port_torchvision_vgg19(weights, layer)
  cache_dir = cache_dir or default_cache_dir()
  cache = os.path.join(cache_dir, f"vgg19_{layer}.npz")
  if os.path.isfile(cache):
    return port_torchvision_vgg19(cache, layer)
  help_text = (f"Download {TORCHVISION_VGG19_URL} yourself and pass {_CONFIG_FIELD}; "
               "biskip_jax never falls back to random VGG weights.")
  if not download:
    raise UserError(f"No VGG19 weights: {cache} does not exist and downloading is off. "
                    + help_text)
  os.makedirs(cache_dir, exist_ok=True)
  fd, raw = tempfile.mkstemp(dir=cache_dir, suffix=".pth.part")
  os.close(fd)
  try:
    try:
      download_file(TORCHVISION_VGG19_URL, raw)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors.
      raise UserError(f"Could not download VGG19 weights from {TORCHVISION_VGG19_URL}: {e}. "
                      + help_text) from e
    digest = sha256(raw)
    if not digest.startswith(TORCHVISION_VGG19_SHA256_PREFIX):
      raise UserError(f"Checksum mismatch for {TORCHVISION_VGG19_URL}: sha256 {digest} does not "
                      f"start with {TORCHVISION_VGG19_SHA256_PREFIX}. " + help_text)
    params = port_torchvision_vgg19(raw, layer)
  finally:
    os.remove(raw)
  state = {}
  for spec in layers_up_to(layer):
    conv = params["params"][spec.name]
    state[f"features.{spec.index}.weight"] = conv["kernel"].transpose(3, 2, 0, 1)
    state[f"features.{spec.index}.bias"] = conv["bias"]
  with atomic_write(cache) as f:
    np.savez(f, **state)
  return params
