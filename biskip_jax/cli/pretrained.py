"""Writes a training run's generator as a shipped model: ``biskip-pretrained --ckpt=RUN
[--name=NAME] [--out_dir=DIR] [--dtype=float32|float16]``, or ``python -m
biskip_jax.cli.pretrained ...`` from a checkout.

``--ckpt`` is a training workdir (its newest checkpoint), its ``best/`` or ``checkpoints/N``,
or a model file ``NAME.npz`` exported already. ``DIR/NAME.npz`` holds the generator's arrays
and ``DIR/NAME.json`` their SHA-256, the run's config and the runs behind the weights (see
``biskip_jax/inference/pretrained.py``); ``--ckpt=pretrained:NAME`` then loads it from the default
``--out_dir``, ``--ckpt=DIR/NAME.npz`` from anywhere.
"""

import os

from absl import app, flags

from biskip_jax import cli
from biskip_jax.inference import pretrained, shipping

_CKPT = cli.define_ckpt_flag(required=True)
_NAME = flags.DEFINE_string("name", pretrained.DEFAULT_NAME, "File stem of the shipped model.")
_OUT_DIR = flags.DEFINE_string("out_dir", pretrained.DIRECTORY, "Destination folder.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "float16"],
                           "dtype of the stored arrays (float16: half the size).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.log_progress_to_stderr()  # Our warnings as lines; orbax's restore chatter off.
  npz_path, json_path, step, provenance = shipping.export_run(
      _CKPT.value, name=_NAME.value, directory=_OUT_DIR.value, dtype=_DTYPE.value)
  print(f"wrote {npz_path} ({os.path.getsize(npz_path) / 2**20:.1f} MiB) and {json_path} "
        f"from step {step} ({provenance['step']} steps with the runs before it)")


def run() -> None:
  """Parses the flags and exports (the ``biskip-pretrained`` console script)."""
  cli.run(main)


if __name__ == "__main__":
  run()
