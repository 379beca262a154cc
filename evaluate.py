"""Evaluates a trained model: ``python evaluate.py --ckpt=RUN --data=DATA`` (gopro, kohler,
synthetic, folder:PATH or levin:PATH).

Prints a table (per image and mean PSNR/SSIM, the blurred input's as a baseline, seconds per
image) and, with ``--out``, writes ``metrics.json``, ``per_image.csv``, the restored images,
saliency heat maps and side-by-side figures.
"""

# The flags and main() are in biskip_jax/cli/evaluate.py (also installed as biskip-evaluate).
from biskip_jax.cli import evaluate

if __name__ == "__main__":
  evaluate.run()
