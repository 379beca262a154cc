r"""A generator whose residual is scaled: ``G_a(b) = b + a (G(b) - b)``.

  python -m experiments.residual_gain --gain=1.15 --out=DIR/NAME.npz CKPT

The generator ends in a global skip (paper Fig. 5: ``G(b) = b + r(b)``, ``r`` the last conv,
``out``). Multiplying that conv's kernel and bias by ``a`` multiplies the residual by ``a``,
exactly; nothing else changes. ``CKPT`` is anything ``--ckpt`` takes; the result is a model
file like a shipped one, with the model's config and ``provenance = {"residual_gain": a,
"of": {"ckpt", "step"}}``, that every program loads with ``--ckpt=DIR/NAME.npz``.

What it tells: a model trained with L1 regresses to the mean of the restorations it cannot
tell apart, so it may restore less than it could. If ``a > 1`` scores higher on validation
pairs, the model is timid there; if lower, its residual is partly wrong there, and more of it
hurts. docs/model_runs.md has the gains tried on the shipped model.
"""

import os

import jax
import numpy as np
from absl import flags

from biskip_jax import cli
from biskip_jax.errors import UserError
from biskip_jax.inference import loading, pretrained

FLAGS = flags.FLAGS
OUT_CONV = "out"  # nn.models.Generator's last conv: its output is the residual r(b).


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  flags.DEFINE_float("gain", None, "The residual's factor a (1: the model itself).")
  flags.DEFINE_string("out", None, "The model file to write, DIR/NAME.npz (and DIR/NAME.json).")
  flags.mark_flags_as_required(["gain", "out"])


def scale_residual(ckpt: str, gain: float, out: str) -> tuple[str, str]:
  """Writes the generator of ``ckpt`` with its residual multiplied by ``gain`` to ``out``.

  Returns:
    ``(npz path, json path)``.

  Raises:
    UserError: a non-finite ``gain``, an ``out`` not ending in ``.npz``, or a model without
      the ``out`` conv.
  """
  if not np.isfinite(gain):
    raise UserError(f"--gain={gain}: expected a finite number")
  if not out.endswith(".npz"):
    raise UserError(f"--out={out}: expected DIR/NAME.npz")
  config, variables, step = loading.load_generator(ckpt)
  variables = jax.device_get(variables)
  if OUT_CONV not in variables["params"]:
    raise UserError(f"{ckpt}: its generator has no '{OUT_CONV}' conv to scale")
  params = dict(variables["params"])
  params[OUT_CONV] = {k: (np.asarray(v, np.float64) * gain).astype(np.asarray(v).dtype)
                      for k, v in params[OUT_CONV].items()}
  directory, name = os.path.split(os.path.abspath(out))
  return pretrained.export(config, {**variables, "params": params}, name=name[:-len(".npz")],
                           directory=directory,
                           provenance={"residual_gain": gain,
                                       "of": {"ckpt": ckpt, "step": step}})


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise UserError(f"name one model to scale, got {len(argv) - 1}")
  npz_path, _ = scale_residual(argv[1], FLAGS.gain, FLAGS.out)
  print(f"wrote {npz_path}: {argv[1]} with its residual times {FLAGS.gain}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
