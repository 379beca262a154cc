r"""The shipped model's rule, applied: does a candidate replace the current file?

  python -m experiments.shipping_rule --pairs=GOPRO_PAIRS --frames=FRAMES --photos=PHOTOS \
      CANDIDATE [CANDIDATE ...]

Scores the current file (``--current``, default the shipped model) and each candidate on the
three validation sets of docs/model_runs.md, each pair also with its sharp image as the input:

* ``pairs``: ``folder:GOPRO_PAIRS``, GoPro pairs of a scene the model never trained on;
* ``frames``: the held-out windows of the frame folder (``data.frames`` of ``--config``);
* ``photos``: the held-out photos of ``PHOTOS`` under ``--config``'s synthetic validation blur
  (drawn from ``data.synthetic.eval_seed``, the same for every model).

A candidate ships only if its mean PSNR is above the current file's on each of the three
sets (a tie does not ship) and every sharp input comes back at
:data:`eval_lib.SHARP_INPUT_TARGET_DB` or more. Prints one table, a verdict per candidate and,
of those that pass, the one with the largest summed gain. ``CANDIDATE`` and ``--current`` are
anything ``--ckpt`` takes. Validation data only: the report sets are scored after the choice.
"""

from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from biskip_jax import cli
from biskip_jax.errors import UserError
from biskip_jax.evaluation import eval_lib
from biskip_jax.inference import loading

FLAGS = flags.FLAGS
SETS = ("pairs", "frames", "photos")


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  flags.DEFINE_string("pairs", None, "Folder of blur/ and sharp/ pairs of an unseen scene.")
  flags.DEFINE_string("frames", None, "Folder of consecutive frames (its held-out windows).")
  flags.DEFINE_string("photos", None, "Folder of sharp photos (its held-out photos).")
  flags.DEFINE_string("current", "pretrained", "The file a candidate must beat (--ckpt).")
  config_flags.DEFINE_config_file("config", "configs/pretrain.py",
                                  "Config whose data section gives the frames and photos sets.")
  flags.mark_flags_as_required(["pairs", "frames", "photos"])


def validation_sets(data: Any, pairs: str, frames: str,
                    photos: str) -> dict[str, tuple[str, Any]]:
  """Set name -> ``(--data, data section or None)`` as ``evaluate.py`` takes them."""
  data = ml_collections.ConfigDict(data.to_dict())
  data.frames.path, data.synthetic.images = frames, photos
  return {"pairs": (f"folder:{pairs}", None), "frames": (f"frames:{frames}", data),
          "photos": ("synthetic", data)}


def score(ckpt: str, sets: dict[str, tuple[str, Any]]) -> dict[str, Any]:
  """Mean PSNR per set (and ``blurred:SET``, the inputs'), and the sharp inputs' PSNRs.

  Returns:
    ``{SET: float, "blurred:SET": float, "sharp": [(name, psnr), ...]}``.
  """
  model_config, variables, _ = loading.load_generator(ckpt)
  deblurrer = eval_lib.deblurrer_for(model_config, variables)
  out: dict[str, Any] = {"sharp": []}
  for name, (data, data_config) in sets.items():
    config = eval_lib.dataset_config(model_config, data, None, data_config)
    examples = list(eval_lib.examples_of(config, what=f"{name} ({data})"))
    result = eval_lib.evaluate(deblurrer, examples, None, saliency=False, progress=False,
                               timing=False)
    out[name], out[f"blurred:{name}"] = result["psnr"], result["blurred_psnr"]
    sharp = eval_lib.evaluate(deblurrer, eval_lib.sharp_as_input(examples), None,
                              saliency=False, progress=False, timing=False, baseline=False)
    out["sharp"] += [(r["name"], r["psnr"]) for r in sharp["per_image"]]
  return out


def failures(current: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
  """Why ``candidate`` does not replace ``current`` (empty: it ships), as short phrases."""
  why = [f"{s} {candidate[s]:.3f} <= {current[s]:.3f}" for s in SETS
         if not candidate[s] > current[s]]
  name, lowest = min(candidate["sharp"], key=lambda x: x[1])
  if lowest < eval_lib.SHARP_INPUT_TARGET_DB:
    why.append(f"sharp input {name} at {lowest:.2f} dB < {eval_lib.SHARP_INPUT_TARGET_DB:g}")
  return why


def report(current_name: str, current: dict[str, Any],
           candidates: dict[str, dict[str, Any]]) -> str:
  """The table (sets by model), a verdict per candidate and the choice."""
  models = {current_name: current, **candidates}
  width = max(len(m) for m in models) + 2
  lines = ["model".ljust(width) + "".join(f"{s:>10}" for s in SETS)
           + f"{'sharp mean':>12}{'lowest':>9}"]
  lines.append("blurred".ljust(width) + "".join(f"{current['blurred:' + s]:10.3f}" for s in SETS))
  for m, r in models.items():
    psnrs = [p for _, p in r["sharp"]]
    lines.append(m.ljust(width) + "".join(f"{r[s]:10.3f}" for s in SETS)
                 + f"{sum(psnrs) / len(psnrs):12.2f}{min(psnrs):9.2f}")
  passing = {}
  for m, r in candidates.items():
    why = failures(current, r)
    lines.append(f"{m}: " + ("ships" if not why else "does not ship: " + "; ".join(why)))
    if not why:
      passing[m] = sum(r[s] - current[s] for s in SETS)
  best = max(passing, key=passing.get) if passing else None
  lines.append(f"choice: {best} (+{passing[best]:.3f} dB summed over the sets)" if best else
               f"choice: none; {current_name} stays")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise UserError("name at least one candidate model")
  sets = validation_sets(cli.config_flag().data, FLAGS.pairs, FLAGS.frames, FLAGS.photos)
  current = score(FLAGS.current, sets)
  candidates = {c: score(c, sets) for c in argv[1:]}
  print(report(FLAGS.current, current, candidates))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
