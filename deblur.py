"""Deblurs photos of any size: ``python deblur.py [--ckpt=RUN] [--out=DIR] INPUT...``.

Without ``--ckpt`` the shipped general-purpose model restores the photos
(``biskip_jax/inference/pretrained/``, see ``docs/MODEL_CARD.md``); ``--ckpt=RUN`` takes a training
run.

INPUTs are files, folders (searched recursively) or glob patterns of anything Pillow reads.
Outputs are RGB PNGs (``--format``) at the input's size with the same base name. Bad files
are reported by name and skipped; the exit status is 1 if any input failed.

Videos (``clip.mp4``, ``.mov``, ``.mkv``, ...; needs ``pip install -e ".[video]"``) become
``OUT/clip.mp4`` with the input's size, frame count, frame rate and audio; ``--video`` makes
each folder INPUT one clip of its frames (at ``--fps``).
"""

# The flags and main() are in biskip_jax/cli/deblur.py (also installed as biskip-deblur).
from biskip_jax.cli import deblur

if __name__ == "__main__":
  deblur.run()
