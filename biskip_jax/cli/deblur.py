"""Deblurs photos of any size: ``biskip-deblur [--ckpt=RUN] [--out=DIR] INPUT...``.

The same as ``python deblur.py ...`` from the repository root. Without ``--ckpt`` the shipped
general-purpose model restores the photos (``biskip_jax/inference/pretrained/``, see
``docs/MODEL_CARD.md``); ``--ckpt=RUN`` takes a training run.

INPUTs are files, folders (searched recursively) or glob patterns of anything Pillow reads.
Outputs are RGB PNGs (``--format``) at the input's size with the same base name; a name taken
by a file ``deblur.py`` did not write (see ``biskip_jax/inference/deblur_lib.py``) becomes
``NAME_1``, on one line. Bad files, and FIFOs or devices named like images, are reported by name and
skipped; the exit status is 1 if any input failed.

Videos (``clip.mp4``, ``.mov``, ``.mkv``, ...; needs ``pip install -e ".[video]"``) become
``OUT/clip.mp4``: H.264 with the input's size, frame count and frame rate, the audio copied
(see ``biskip_jax/inference/video.py``); ``--video`` makes each folder INPUT one clip of its frames.
"""

import sys

from absl import flags

from biskip_jax import cli
from biskip_jax.errors import UserError, stop_on_signals
from biskip_jax.inference import deblur_lib

_CKPT = cli.define_ckpt_flag()
_OUT = flags.DEFINE_string("out", "deblurred", "Output folder.")
_FORMAT = flags.DEFINE_enum("format", "png", ["png", "jpg", "tif", "bmp", "webp"],
                            "Output image format.")
_DTYPE = cli.define_dtype_flag()
_TILE, _OVERLAP = cli.define_tile_flags()
_VIDEO = flags.DEFINE_bool("video", False, "Each folder INPUT is one clip's frames (its images "
                           "in natural order): restored into one OUT/FOLDER.mp4 at --fps.")
_FPS = flags.DEFINE_string("fps", "25", "Frame rate of the clips made by --video, e.g. 25, "
                           "29.97 or 30000/1001 (video files keep their own).")
_ENSEMBLE = cli.define_ensemble_flag()


def main(argv):
  inputs = argv[1:]
  cli.log_progress_to_stderr()  # Our warnings as lines; orbax's restore chatter off.
  stop_on_signals()  # SIGTERM leaves no half-written file.
  if not inputs:
    raise UserError("no INPUT given: pass image or video files, folders or glob patterns")
  failures = deblur_lib.run(_CKPT.value, _OUT.value, inputs, fmt=_FORMAT.value,
                            dtype=_DTYPE.value, tile_size=_TILE.value,
                            video_folders=_VIDEO.value, fps=_FPS.value,
                            ensemble=_ENSEMBLE.value, tile_overlap=_OVERLAP.value)
  sys.exit(1 if failures else 0)


def run() -> None:
  """Parses the flags and deblurs (the ``biskip-deblur`` console script)."""
  cli.run(main)
