"""Classical baselines scored under the same protocols as the model (``--ckpt=unsharp``).

An unsharp mask is what a user without a deblurring model reaches for: a restoration that
does not beat it is not worth its compute.
"""

import numpy as np
from PIL import Image, ImageFilter

UNSHARP = "unsharp"  # --ckpt value naming the unsharp-mask baseline.


def unsharp_mask(image: np.ndarray, radius: float = 2.0, percent: int = 150,
                 threshold: int = 0) -> np.ndarray:
  """Pillow's unsharp mask, ``ImageFilter.UnsharpMask(radius, percent, threshold)``.

  ``out = clip(x + percent / 100 * (x - G_radius * x))`` where the difference exceeds
  ``threshold``, ``G_radius`` a Gaussian blur.

  Args:
    image: ``uint8[H, W, 3]``.
    radius, percent, threshold: Pillow's parameters (defaults: a strong, common setting).

  Returns:
    ``uint8[H, W, 3]``.
  """
  out = Image.fromarray(np.asarray(image, np.uint8)).filter(
      ImageFilter.UnsharpMask(radius, percent, threshold))
  return np.asarray(out, np.uint8)
