"""Table 1's training-scheme names parsed into explicit switches.

A scheme name is ``<losses>-<variant>`` (paper §5):

* losses: any of ``S`` (self-paced), ``A`` (adversarial), ``1`` or ``2`` (L1 or L2 pixel loss),
  ``P`` (perceptual/feature loss), in that order, e.g. ``SA1P``, ``A2``, ``2P``, ``P``;
* variant: the generator body, ``S`` (Skip), ``BS-w/o-R``, ``BS-cR`` or ``BS`` (Bi-Skip).

The twelve names of Table 1 are :data:`TABLE1`. Other well-formed combinations are accepted
too (e.g. ``SA2P-BS``); anything else raises :class:`ValueError` naming the problem.
"""

import dataclasses
import re

VARIANTS = ("S", "BS-w/o-R", "BS-cR", "BS")

# Table 1 of the paper: scheme -> (GoPro PSNR, SSIM) reported there.
TABLE1 = {
    "A2-S": (27.94, 0.8959),
    "A2-BS-cR": (28.51, 0.9065),
    "A2-BS-w/o-R": (28.12, 0.8992),
    "A2-BS": (29.10, 0.9175),
    "A2P-BS": (29.13, 0.9181),
    "A1P-BS": (29.29, 0.9211),
    "1-BS": (28.94, 0.9145),
    "2-BS": (28.92, 0.9136),
    "P-BS": (26.77, 0.8742),
    "2P-BS": (29.11, 0.9189),
    "AP-BS": (29.16, 0.9196),
    "SA1P-BS": (29.82, 0.9330),
}

_LOSSES_RE = re.compile(r"^(?P<s>S?)(?P<a>A?)(?P<pix>[12]?)(?P<p>P?)$")


@dataclasses.dataclass(frozen=True)
class Scheme:
  """Explicit loss switches and generator variant of one training scheme."""
  name: str
  self_paced: bool
  adversarial: bool
  pixel: str  # "l1", "l2" or "none"
  perceptual: bool
  variant: str


def parse_scheme(name: str) -> Scheme:
  """Parses a Table 1 scheme name such as ``"SA1P-BS"`` into a :class:`Scheme`.

  Raises:
    ValueError: for an unknown variant, a malformed loss prefix, or a combination without
      any content loss under self-paced learning (its l_i would be identically zero).
  """
  known = ", ".join(TABLE1)
  if not isinstance(name, str) or "-" not in name:
    raise ValueError(f"unknown training scheme {name!r}: expected LOSSES-VARIANT, "
                     f"one of {known}")
  losses, variant = name.split("-", 1)
  if variant not in VARIANTS:
    raise ValueError(f"unknown generator variant {variant!r} in scheme {name!r}: expected "
                     f"one of {', '.join(VARIANTS)} (Table 1 schemes: {known})")
  m = _LOSSES_RE.match(losses)
  if not losses or m is None:
    raise ValueError(f"unknown loss letters {losses!r} in scheme {name!r}: expected S "
                     f"(self-paced), A (adversarial), 1|2 (pixel L1|L2), P (perceptual) in "
                     f"that order (Table 1 schemes: {known})")
  pixel = {"": "none", "1": "l1", "2": "l2"}[m["pix"]]
  perceptual = bool(m["p"])
  adversarial = bool(m["a"])
  if pixel == "none" and not perceptual and not adversarial:
    raise ValueError(f"scheme {name!r} has no loss at all")
  self_paced = bool(m["s"])
  if self_paced and pixel == "none" and not perceptual:
    raise ValueError(f"scheme {name!r}: self-paced learning (S) weighs samples by their "
                     "content loss (eq. 11), so it needs a pixel (1|2) or perceptual (P) term")
  return Scheme(name=name, self_paced=self_paced, adversarial=adversarial, pixel=pixel,
                perceptual=perceptual, variant=variant)
