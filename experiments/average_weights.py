r"""A generator whose weights are the mean of several models' (a "model soup").

  python -m experiments.average_weights --out=DIR/NAME.npz CKPT CKPT [CKPT ...]

Each ``CKPT`` is anything ``--ckpt`` takes (``pretrained``, a model file ``PATH/NAME.npz``, a
training workdir, its ``best`` or ``checkpoints/N``). The generators must have the same model
section (the same arrays); their parameters (and batch-norm statistics, if any) are averaged
with equal weights and written as a model file like a shipped one, with the first model's
config and ``provenance = {"average_of": [{"ckpt", "step"}, ...]}``, that every program loads
with ``--ckpt=DIR/NAME.npz``.

Averaging the weights of models fine-tuned from one starting point often scores above each
of them (Wortsman et al., "Model soups", ICML 2022): they lie in one basin of the loss.
docs/model_runs.md has the averages tried for the shipped model and how they were judged.
"""

import os

import jax
import numpy as np
from absl import flags

from biskip_jax import cli
from biskip_jax.errors import UserError
from biskip_jax.inference import loading, pretrained

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  flags.DEFINE_string("out", None, "The model file to write, DIR/NAME.npz (and DIR/NAME.json).")
  flags.mark_flag_as_required("out")


def average(ckpts: list[str], out: str) -> tuple[str, str]:
  """Writes the mean of the generators ``ckpts`` name to the model file ``out``.

  Returns:
    ``(npz path, json path)``.

  Raises:
    UserError: fewer than two models, an ``out`` not ending in ``.npz``, or a model whose
      model section differs from the first's (one line naming both).
  """
  if len(ckpts) < 2:
    raise UserError(f"name at least two models to average, got {len(ckpts)}")
  if not out.endswith(".npz"):
    raise UserError(f"--out={out}: expected DIR/NAME.npz")
  config, first, step = loading.load_generator(ckpts[0])
  trees, sources = [jax.device_get(first)], [{"ckpt": ckpts[0], "step": step}]
  for ckpt in ckpts[1:]:
    other_config, variables, other_step = loading.load_generator(ckpt)
    if other_config.model != config.model:
      raise UserError(f"{ckpt}: its model section differs from {ckpts[0]}'s; only the same "
                      "network's weights can be averaged")
    if jax.tree_util.tree_structure(variables) != jax.tree_util.tree_structure(trees[0]):
      raise UserError(f"{ckpt}: its arrays are not those of {ckpts[0]}")
    trees.append(jax.device_get(variables))
    sources.append({"ckpt": ckpt, "step": other_step})
  mean = jax.tree_util.tree_map(
      lambda *xs: np.mean(np.stack([np.asarray(x, np.float64) for x in xs]), 0).astype(
          np.asarray(xs[0]).dtype), *trees)
  directory, name = os.path.split(os.path.abspath(out))
  return pretrained.export(config, mean, name=name[:-len(".npz")], directory=directory,
                           provenance={"average_of": sources})


def main(argv: list[str]) -> None:
  npz_path, _ = average(argv[1:], FLAGS.out)
  print(f"wrote {npz_path}: the mean of {len(argv) - 1} models")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
