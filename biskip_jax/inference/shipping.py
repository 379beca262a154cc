"""Where a model's weights came from, and exporting a training run as a shipped model.

A run warm-started with ``train.init_from`` continues another model's training: its own step
count is not the model's. So the warm start records the runs behind its source in
``WORKDIR/init_from.json`` (:func:`record_init_from`), read back when the run is exported
(:func:`export_run`, :func:`lineage`): a shipped model's ``provenance`` lists every run behind
its weights, from the first, and their steps summed.

Export a training run (the generator of its latest or named checkpoint) with::

  python -m biskip_jax.cli.pretrained --ckpt=runs/pretrain --name=biskip_general
"""

import json
import os
from typing import Any

from biskip_jax.inference import loading, pretrained

INIT_FROM_FILE = "init_from.json"  # In a warm-started run's workdir: the runs behind its start.


def _runs_of(provenance: dict[str, Any]) -> list[dict[str, Any]]:
  """The runs behind an exported model's weights (from a one-run ``{"workdir", "step"}`` too)."""
  if "runs" in provenance:
    return list(provenance["runs"])
  if provenance.get("step") is not None:
    where = provenance.get("workdir") or provenance.get("source", "")
    return [{"workdir": where, "steps": int(provenance["step"])}]
  return []


def _provenance(runs: list[dict[str, Any]]) -> dict[str, Any]:
  return {"step": sum(int(r["steps"]) for r in runs), "runs": runs}


def runs_behind(source: str, step: int | None) -> list[dict[str, Any]]:
  """The training runs behind the weights ``train.init_from=source`` names, first to last.

  Args:
    source: ``"pretrained[:NAME]"`` or ``PATH/NAME.npz`` (its ``provenance``), or a training
      run's path (the runs behind its own start, if it was warm-started, then itself).
    step: the source's step (of a training run; ignored for an exported model).
  """
  if loading.is_model_file(source):
    with open(pretrained.paths(*loading.model_file(source))[1]) as f:
      return _runs_of(json.load(f).get("provenance", {}))
  return lineage(loading.workdir_of(source), source, int(step))["runs"]


def record_init_from(workdir: str, source: str, step: int | None) -> None:
  """Writes ``WORKDIR/init_from.json``: the source of a warm start and the runs behind it."""
  pretrained.write_json(os.path.join(workdir, INIT_FROM_FILE),
              {"init_from": source, "runs": runs_behind(source, step)})


def lineage(workdir: str, ckpt: str, step: int) -> dict[str, Any]:
  """The ``provenance`` of the weights of run ``workdir`` at ``step`` (``ckpt``: as named).

  ``runs``: those recorded by the run's warm start, if any, then the run itself; ``step``:
  their steps summed, the optimisation steps behind the weights.
  """
  run: dict[str, Any] = {"workdir": ckpt, "steps": int(step)}
  runs = []
  path = os.path.join(workdir, INIT_FROM_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      record = json.load(f)
    runs, run["init_from"] = list(record["runs"]), record["init_from"]
  return _provenance(runs + [run])


def export_run(ckpt: str, *, name: str = pretrained.DEFAULT_NAME,
               directory: str = pretrained.DIRECTORY,
               dtype: str = "float32") -> tuple[str, str, int | None, dict[str, Any]]:
  """Writes the generator a ``--ckpt`` value names as a shipped model (see
  :func:`biskip_jax.inference.pretrained.export`).

  Args:
    ckpt: a training workdir, its ``best`` or ``checkpoints/N``, or a model file
      ``PATH/NAME.npz`` exported already (``pretrained[:NAME]`` too).
    name, directory, dtype: as :func:`biskip_jax.inference.pretrained.export`.

  Returns:
    ``(npz path, json path, the checkpoint's step, provenance)``; ``provenance["step"]``
    counts the steps of every run behind the weights (:func:`lineage`).

  Raises:
    UserError: the model cannot be loaded (one line naming it).
  """
  config, variables, step = loading.load_generator(ckpt)
  if loading.is_model_file(ckpt):  # Exported already: the runs behind it as it says.
    provenance = _provenance(runs_behind(ckpt, step))
  else:
    provenance = lineage(loading.workdir_of(ckpt), os.path.normpath(ckpt), step)
  npz_path, json_path = pretrained.export(config, variables, name=name, directory=directory,
                               provenance=provenance, dtype=dtype)
  return npz_path, json_path, step, provenance
