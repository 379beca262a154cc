"""Exports the generator: ``biskip-export [--ckpt=RUN] --format=stablehlo|onnx --out=FILE``.

The same as ``python export.py ...`` from the repository root. Without ``--ckpt`` the shipped
model is exported. The file takes and returns [B, H, W, 3] float32 NHWC RGB in [-1, 1] for any
batch and any H, W that are multiples of 32; ``FILE.json`` beside it says so, and what to run it
with (``biskip_jax/inference/export_lib.py``). ``--format=onnx`` needs the ``export`` extra
(docs/install.md).
"""

from absl import flags

from biskip_jax import cli
from biskip_jax.errors import UserError, stop_on_signals
from biskip_jax.inference import export_lib

_CKPT = cli.define_ckpt_flag()
_FORMAT = flags.DEFINE_enum("format", None, list(export_lib.FORMATS),
                            "stablehlo (jax.export, serialized) or onnx (jax2onnx, opset 23).")
_OUT = flags.DEFINE_string("out", None, "The file to write (and FILE.json beside it).")
flags.mark_flags_as_required(["format", "out"])


def main(argv):
  cli.log_progress_to_stderr()  # Our warnings as lines; orbax's restore chatter off.
  stop_on_signals()  # SIGTERM leaves no half-written file.
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  meta = export_lib.export(_CKPT.value, _FORMAT.value, _OUT.value)
  shape = ", ".join(str(d) for d in meta["input"]["shape"])
  print(f"wrote {_OUT.value} ({meta['format']}, input x [{shape}] float32 in [-1, 1]) and "
        f"{_OUT.value}.json")


def run() -> None:
  """Parses the flags and exports (the ``biskip-export`` console script)."""
  cli.run(main)
