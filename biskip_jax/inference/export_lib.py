"""Exports the generator to StableHLO (``jax.export``) or ONNX (jax2onnx).

Both artifacts compute the generator of a run (or of the shipped model) in inference mode, with
its weights inside, for any batch and any height and width that are multiples of 32 (for the
paper's five levels; ``2 ** len(config.model.channels)`` in general):

* input ``x``: [B, H, W, 3] float32, RGB, NHWC, in [-1, 1] (``uint8 / 127.5 - 1``);
* output: [B, H, W, 3] float32, the restored images in [-1, 1], not clipped
  (``uint8 = clip(round((y + 1) * 127.5), 0, 255)``).

Other sizes are the caller's to pad, as :class:`biskip_jax.nn.models.BiSkip` does (reflect-pad the
bottom and right to the multiple, crop the output back). The convention is written beside the
artifact in ``OUT.json`` (:func:`metadata`), and into the ONNX file's ``metadata_props``.

StableHLO: ``jax.export.deserialize(open(OUT, "rb").read()).call(x)`` in any JAX process (no
biskip_jax needed), with a symbolic batch ``b`` and sides ``32*h``, ``32*w``.

ONNX: jax2onnx 0.17.1 (installed with ``--no-deps``: its metadata caps orbax-checkpoint below
the version this project needs, and it imports no orbax), opset 23, input ``x`` and output
``y`` with the same symbolic dimensions.

The two files are written whole or not at all, and replace only files an earlier ``export.py``
wrote (:class:`~biskip_jax.output_files.OutputFolder`): a user's file of that name stops the
export with one line before any work, and a disk that fills up leaves an earlier export as it
was.
"""

import contextlib
import datetime
import importlib.metadata
import json
import logging
import os
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections

from biskip_jax.errors import UserError
from biskip_jax.inference import loading
from biskip_jax.nn import models
from biskip_jax.output_files import OutputFolder, atomic_write

FORMATS = ("stablehlo", "onnx")
ONNX_OPSET = 23
JAX2ONNX_VERSION = "0.17.1"
# jax2onnx converts one form of each conv, not a switch on the platform: ONNX files get the
# CPU forms (sub-pixel up-sampling, BiSkip.platform), whatever runtime reads them.
ONNX_CONV_PLATFORM = "cpu"
INSTALL_HINT = ("pip install -e '.[export]' && pip install --no-deps "
                f"jax2onnx=={JAX2ONNX_VERSION}")


def generator_fn(config: ml_collections.ConfigDict, variables: dict[str, Any],
                 platform: str | None = None) -> tuple[Callable[[jax.Array], jax.Array], int]:
  """The generator in inference mode, weights closed over, in float32.

  ``platform``: None for StableHLO (each platform's conv forms, chosen when the file is
  compiled), :data:`ONNX_CONV_PLATFORM` for :func:`export_onnx`.

  Returns:
    ``(fn, multiple)``: ``fn(x [B, H, W, 3] float32 in [-1, 1]) -> [B, H, W, 3]``, and the
    multiple of the sides at which it needs no padding (32 for five levels).
  """
  # Exported files are float32: the compute dtype is a device's.
  model = models.generator_from_config(config.model, "float32", platform)
  return (lambda x: model.apply(variables, x, train=False)), model.multiple


def input_spec(multiple: int) -> jax.ShapeDtypeStruct:
  """The symbolic input [b, multiple*h, multiple*w, 3] float32 (b, h, w >= 1)."""
  b, h, w = jax.export.symbolic_shape("b, h, w")
  return jax.ShapeDtypeStruct((b, multiple * h, multiple * w, 3), jnp.float32)


def export_stablehlo(fn: Callable[[jax.Array], jax.Array], multiple: int) -> jax.export.Exported:
  """``jax.export`` of ``fn`` on :func:`input_spec` for CPU and CUDA (a size check included).

  ``Exported.serialize()`` gives the bytes to store; ``jax.export.deserialize`` reads them.
  """
  return jax.export.export(jax.jit(fn), platforms=("cpu", "cuda"))(input_spec(multiple))


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
  """jax2onnx and onnx_ir warn about their optional plugins (equinox, dm_pix) and shape
  annotations they skip; none of it concerns this model. Errors still show."""
  loggers = [logging.getLogger(n) for n in ("jax2onnx", "onnx_ir")]
  levels = [l.level for l in loggers]
  for l in loggers:
    l.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for l, level in zip(loggers, levels):
      l.setLevel(level)


def require_onnx() -> None:
  """Raises a one-line :class:`UserError` naming the extra when the ONNX packages are missing."""
  missing = []
  for module in ("onnx", "onnxruntime", "jax2onnx"):
    try:
      __import__(module)
    except ImportError:
      missing.append(module)
  if missing:
    raise UserError(f"--format=onnx needs {', '.join(missing)}, not installed: {INSTALL_HINT}")


def onnx_versions() -> dict[str, Any]:
  """Versions of the ONNX packages and the opset written (for metadata and benchmarks)."""
  return {**{p: importlib.metadata.version(p) for p in ("onnx", "onnxruntime", "jax2onnx")},
          "opset": ONNX_OPSET}


def export_onnx(fn: Callable[[jax.Array], jax.Array], multiple: int) -> Any:
  """``fn`` as an ``onnx.ModelProto`` (opset 23) with input ``x`` and output ``y``, both
  [b, multiple*h, multiple*w, 3]; ``fn`` from ``generator_fn(..., ONNX_CONV_PLATFORM)``.

  The intermediate shape annotations jax2onnx writes are dropped: some give NHWC shapes to
  values its convs produce in NCHW, which onnxruntime warns about and then ignores.
  """
  require_onnx()
  from jax2onnx import to_onnx  # pylint: disable=g-import-not-at-top
  with _quiet_converter():
    proto = to_onnx(fn, [input_spec(multiple)], model_name="biskip_generator", opset=ONNX_OPSET,
                    input_names=["x"], output_names=["y"])
  del proto.graph.value_info[:]
  return proto


def metadata(config: ml_collections.ConfigDict, *, ckpt: str, step: int | None, fmt: str,
             multiple: int) -> dict[str, Any]:
  """What the exported file computes and how to feed it (written as ``OUT.json``)."""
  versions = {"jax": jax.__version__, **(onnx_versions() if fmt == "onnx" else {})}
  return {
      "format": fmt,
      "model": "Bi-Skip generator (Zhang et al., 2019), inference mode",
      # As JSON reads it back (lists, not the config's tuples), so the file and this agree.
      "source": {"ckpt": ckpt, "step": step,
                 "model": json.loads(json.dumps(config.model.to_dict(), default=list))},
      "input": {"name": "x", "shape": ["b", f"{multiple}*h", f"{multiple}*w", 3],
                "dtype": "float32", "layout": "NHWC", "channels": "RGB", "range": [-1.0, 1.0],
                "from_uint8": "x = u8 / 127.5 - 1",
                "sizes": f"height and width multiples of {multiple}: pad (reflect) the bottom "
                         "and right, crop the output back"},
      "output": {"name": "y", "shape": ["b", f"{multiple}*h", f"{multiple}*w", 3],
                 "dtype": "float32", "range": "about [-1, 1], not clipped",
                 "to_uint8": "u8 = clip(round((y + 1) * 127.5), 0, 255)"},
      "versions": versions,
      "exported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
  }


def serialize(fn: Callable[[jax.Array], jax.Array], multiple: int, fmt: str,
              meta: dict[str, Any]) -> bytes:
  """The bytes of the exported file in format ``fmt`` (``FORMATS``)."""
  if fmt == "stablehlo":
    return bytes(export_stablehlo(fn, multiple).serialize())
  proto = export_onnx(fn, multiple)
  for key, value in (("biskip_io", json.dumps({k: meta[k] for k in ("input", "output")})),
                     ("biskip_source", json.dumps(meta["source"]))):
    proto.metadata_props.add(key=key, value=value)
  return proto.SerializeToString()


def export(ckpt: str, fmt: str, out: str) -> dict[str, Any]:
  """Writes the generator of ``ckpt`` to ``out`` in format ``fmt`` and ``out + ".json"``.

  Args:
    ckpt: ``pretrained[:NAME]`` or a training run (as ``deblur.py --ckpt``).
    fmt: ``"stablehlo"`` or ``"onnx"``.
    out: the file to write; its folder is created.

  Returns:
    The metadata written to ``out + ".json"``.

  Raises:
    UserError: an unknown format, a missing checkpoint, missing ONNX packages, or an ``out``
      that cannot be written (one line each).
  """
  if fmt not in FORMATS:
    raise UserError(f"--format={fmt}: expected one of {', '.join(FORMATS)}")
  if fmt == "onnx":
    require_onnx()  # Before the minutes of loading and converting.
  if not out or out.endswith(os.sep) or os.path.isdir(out):
    raise UserError(f"--out {out!r} must name a file, not a folder")
  outputs = OutputFolder(os.path.dirname(os.path.abspath(out)), "export",
                         where=f"--out {out}")
  names = [os.path.basename(out), os.path.basename(out) + ".json"]
  for name in names:  # Before the minutes of loading and converting.
    outputs.check(name)
  config, variables, step = loading.load_generator(ckpt)
  outputs.record(names)  # Fails fast on a folder that cannot be written.
  fn, multiple = generator_fn(config, variables,
                              ONNX_CONV_PLATFORM if fmt == "onnx" else None)
  meta = metadata(config, ckpt=ckpt, step=step, fmt=fmt, multiple=multiple)
  data = serialize(fn, multiple, fmt, meta)
  with outputs.writing(names[0]) as path, atomic_write(path) as f:
    f.write(data)
  with outputs.writing(names[1]) as path, atomic_write(path, "w") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
  return meta
