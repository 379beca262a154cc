"""Evaluation protocols (paper §6, DESIGN §8): PSNR/SSIM, Köhler, timing, saliency.

The one evaluation path: ``evaluate.py`` (:func:`run`), validation during training
(``train_lib.Validator``) and the experiments all restore with a :func:`deblurrer_for` (no
size buckets: every image is restored at its own size, so the metrics are the model's and not
the padding's) and score with :func:`evaluate`.

``evaluate(deblurrer, examples, out_dir)`` restores every example at full resolution, writes
the restored PNGs, then computes the metrics on those uint8 images exactly as written:

* PSNR and SSIM on RGB uint8 (SSIM: Gaussian 11x11, σ 1.5, K = (0.01, 0.03), as
  scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``),
  for the restored image and, as a baseline, the blurred input;
* Köhler's protocol when an example carries ``sharp_frames`` (see ``shift_tolerant.kohler_scores``);
* Levin et al.'s protocol with ``aligned=True`` (``--data=levin:PATH``): PSNR and SSIM at the
  best sub-pixel shift, 15-px border cut, in gray (``shift_tolerant.levin_scores``), for the
  restored image and the blurred baseline alike;
* seconds per image: the device time of the restoration alone (compilation excluded by a
  warm-up call per new shape; disk I/O excluded);
* the saliency indicator of §6.2: image-signature saliency maps of the sharp and restored
  images, written as heat maps, and their correlation coefficient.

Outputs in ``out_dir``: ``metrics.json`` (DESIGN §9 schema), ``per_image.csv``,
``restored/NAME.png``, ``saliency/NAME_{sharp,restored}.png`` and ``figures/NAME.png``
(blurred | restored | sharp) for the first ``num_figures`` images. They replace only files an
earlier evaluation wrote there (:class:`~biskip_jax.output_files.OutputFolder`): a file of the
user's under one of these names stops the run with one line, before anything is written if it
is ``metrics.json`` or ``per_image.csv``.
"""

import csv
import itertools
import json
import os
import time
from typing import Any, Iterable, Iterator

import ml_collections
import numpy as np

from biskip_jax.config import config_defaults
from biskip_jax.data import input_pipeline
from biskip_jax.data.datasets import SOURCES, load_image, save_image
from biskip_jax.errors import UserError, os_errors_as_user_errors, raise_if_signalled
from biskip_jax.evaluation import baselines, image_signature, metrics, shift_tolerant
from biskip_jax.inference import full_resolution, loading
from biskip_jax.output_files import OutputFolder, atomic_write

PROGRAM = "evaluate"  # Names its record of outputs, .evaluate_outputs.jsonl.

_COLUMNS = ("name", "psnr", "ssim", "blurred_psnr", "blurred_ssim", "aligned_psnr",
            "aligned_ssim", "blurred_aligned_psnr", "blurred_aligned_ssim", "seconds",
            "saliency_similarity", "kohler_psnr", "kohler_mssim")
_MEANS = tuple(c for c in _COLUMNS if c not in ("name", "seconds"))
# A sharp photo given as input should come back unchanged to within this PSNR (the shipped
# model's model card reports against it).
SHARP_INPUT_TARGET_DB = 35.0


def output_stem(name: str) -> str:
  """The stem of the files written for example ``name``: its path without the extension,
  separators as ``__`` (``restored/STEM.png``)."""
  stem = os.path.splitext(name)[0]
  return stem.replace(os.sep, "__").replace("/", "__")


def _save(outputs: OutputFolder, rel: str, image: np.ndarray) -> str:
  """Writes ``image`` to ``OUT/rel`` (if it is evaluate.py's to write); returns the path."""
  with outputs.writing(rel) as path:
    save_image(path, image)
  return path


def _summary_files(outputs: OutputFolder) -> tuple[str, str]:
  """The names of the metric files, checked to be evaluate.py's to write."""
  names = ("metrics.json", "per_image.csv")
  for name in names:
    outputs.check(name)
  return names


def _timed(deblurrer: Any, image: np.ndarray, seen: set | None) -> tuple[np.ndarray, float]:
  """Restores ``image``; ``seen`` (shapes already run) warms up each new shape untimed."""
  key = image.shape
  if seen is not None and key not in seen:  # Compile (and warm up) outside the timing.
    deblurrer(image)
    seen.add(key)
  t0 = time.perf_counter()
  out = deblurrer(image)  # Returns a host uint8 array: the device work has finished.
  return out, time.perf_counter() - t0


def deblurrer_for(config: Any, variables: dict[str, Any], *, dtype: str | None = None,
                  ensemble: bool = False, tile_size: int | None = None,
                  tile_overlap: int | None = None) -> Any:
  """The :class:`full_resolution.Deblurrer` of evaluation: images at their own size (no buckets).

  ``tile_size`` and ``tile_overlap`` override ``config.eval``'s (None: the config's).

  Build one per run and replace its ``variables`` to evaluate new weights: its jitted
  generator compiles once per image shape for the life of the Deblurrer.
  """
  return full_resolution.Deblurrer(config, variables, dtype=dtype, ensemble=ensemble, size_bucket=0,
                                   tile_size=tile_size, tile_overlap=tile_overlap)


def evaluate(deblurrer: Any, examples: Iterable[dict[str, Any]], out_dir: str | None,
             num_figures: int = 4, saliency: bool = True, progress: bool = True,
             info: dict[str, Any] | None = None, *, timing: bool = True,
             baseline: bool = True, aligned: bool = False) -> dict[str, Any]:
  """Runs the evaluation protocol over ``examples``; returns the ``metrics.json`` content.

  Args:
    deblurrer: callable uint8 [H, W, 3] -> uint8 [H, W, 3] (:func:`deblurrer_for`).
    examples: dicts with ``name``, ``blur`` and ``sharp`` uint8 [H, W, 3] (+ ``sharp_frames``).
    out_dir: where to write images, figures and metric files (None: nothing written).
    num_figures: side-by-side figures to write.
    saliency: compute the §6.2 saliency indicator.
    progress: show a progress bar.
    info: added to the result (e.g. the checkpoint and the data evaluated).
    timing: time each restoration after an untimed warm-up per new shape (False: restore
      each image once, no ``seconds``).
    baseline: also score the blurred inputs (``blurred_psnr``, ``blurred_ssim``).
    aligned: also score up to a shift, Levin et al.'s protocol (``aligned_psnr``,
      ``aligned_ssim``; with `baseline`, ``blurred_aligned_*`` too).

  Returns:
    The summary (means, ``num_images``) with the rows under ``per_image``.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  outputs = OutputFolder(out_dir, PROGRAM) if out_dir else None
  if outputs:
    _summary_files(outputs)  # A user's metrics.json stops the run before minutes of work.
    with os_errors_as_user_errors(f"--out {out_dir}: cannot create the folder"):
      for sub in ("restored", "figures") + (("saliency",) if saliency else ()):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
  rows = []
  seen: set | None = set() if timing else None
  for i, ex in enumerate(tqdm(examples, desc="evaluate", unit="img", disable=not progress)):
    raise_if_signalled()
    blur, sharp = ex["blur"], ex["sharp"]
    restored, seconds = _timed(deblurrer, blur, seen)
    name = output_stem(ex["name"])
    if outputs:
      path = _save(outputs, f"restored/{name}.png", restored)
      restored = load_image(path)  # Metrics on the image exactly as written.
    row = dict(name=ex["name"], psnr=metrics.psnr(restored, sharp),
               ssim=metrics.ssim(restored, sharp))
    if baseline:
      row.update(blurred_psnr=metrics.psnr(blur, sharp), blurred_ssim=metrics.ssim(blur, sharp))
    if aligned:
      for prefix, image in (("", restored), ("blurred_", blur))[:2 if baseline else 1]:
        try:
          a = shift_tolerant.levin_scores(image, sharp)
        except ValueError as e:
          raise UserError(f"{ex['name']}: Levin's protocol: {e}") from None
        row[prefix + "aligned_psnr"], row[prefix + "aligned_ssim"] = a["psnr"], a["ssim"]
    if timing:
      row["seconds"] = seconds
    if saliency:
      s_sharp = image_signature.image_signature_saliency(sharp)
      s_rest = image_signature.image_signature_saliency(restored)
      row["saliency_similarity"] = image_signature.saliency_similarity(s_sharp, s_rest)
      if outputs:
        _save(outputs, f"saliency/{name}_sharp.png", image_signature.saliency_heatmap(s_sharp))
        _save(outputs, f"saliency/{name}_restored.png", image_signature.saliency_heatmap(s_rest))
    if ex.get("sharp_frames") is not None:
      k = shift_tolerant.kohler_scores(restored, ex["sharp_frames"])
      row["kohler_psnr"], row["kohler_mssim"] = k["psnr"], k["mssim"]
    if outputs and i < num_figures:
      _save(outputs, f"figures/{name}.png", np.concatenate([blur, restored, sharp], axis=1))
    rows.append(row)
  return summarize(rows, out_dir, info)


def summarize(rows: list[dict[str, Any]], out_dir: str | None,
              info: dict[str, Any] | None = None) -> dict[str, Any]:
  """Averages per-image rows into the DESIGN §9 schema, adds ``info``, writes JSON and CSV.

  The one writer of ``metrics.json``.
  """
  def mean(key):
    vals = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None

  result = {k: mean(k) for k in _MEANS}
  result = {k: v for k, v in result.items() if v is not None}
  if any("seconds" in r for r in rows):
    result["seconds_per_image"] = mean("seconds")
    result["seconds_per_image_note"] = ("device time of the restoration at full resolution, "
                                        "excluding compilation and disk I/O")
  result["num_images"] = len(rows)
  finite = [r for r in rows if np.isfinite(r["psnr"])]
  if finite:  # The worst image: a mean can hide one that a model harms.
    worst = min(finite, key=lambda r: r["psnr"])
    result["psnr_min"], result["psnr_min_image"] = float(worst["psnr"]), worst["name"]
  result["per_image"] = rows
  result.update(info or {})
  if out_dir:
    outputs = OutputFolder(out_dir, PROGRAM)
    json_name, csv_name = _summary_files(outputs)
    with outputs.writing(json_name) as path, atomic_write(path, "w") as f:
      json.dump(result, f, indent=2, default=float)
    with outputs.writing(csv_name) as path, atomic_write(path, "w") as f:
      writer = csv.DictWriter(f, fieldnames=[c for c in _COLUMNS if any(c in r for r in rows)])
      writer.writeheader()
      for r in rows:
        writer.writerow({k: r[k] for k in writer.fieldnames if k in r})
  return result


def format_table(result: dict[str, Any], max_rows: int = 20, csv_path: str | None = None) -> str:
  """A terminal table: per-image rows (up to ``max_rows``) and the mean.

  ``csv_path``: where :func:`summarize` wrote every row (``OUT/per_image.csv``), named in the
  line that counts the rows left out; None when nothing was written.
  """
  cols = [c for c in _COLUMNS[1:] if c in result or any(c in r for r in result["per_image"])]
  width = max([len("mean")] + [len(r["name"]) for r in result["per_image"][:max_rows]])
  widths = [max(13, len(c)) for c in cols]
  lines = [f"{'image':<{width}} " + " ".join(f"{c:>{n}}" for c, n in zip(cols, widths))]

  def fmt(row):
    return " ".join(f"{row[c]:{n}.4f}" if isinstance(row.get(c), float) else " " * n
                    for c, n in zip(cols, widths))

  for r in result["per_image"][:max_rows]:
    lines.append(f"{r['name']:<{width}} " + fmt(r))
  if len(result["per_image"]) > max_rows:
    more = len(result["per_image"]) - max_rows
    lines.append(f"... ({more} more in {csv_path})" if csv_path else
                 f"... ({more} more not shown; with --out=DIR all are in DIR/per_image.csv)")
  mean_row = {**result, "seconds": result.get("seconds_per_image")}
  lines.append(f"{'mean':<{width}} " + fmt(mean_row))
  if result.get("sharp_as_input") and "psnr_min" in result:
    lines.append(f"lowest PSNR with the sharp image as input: {result['psnr_min']:.2f} dB "
                 f"({result['psnr_min_image']}; the target is >= {SHARP_INPUT_TARGET_DB:g} dB)")
  return "\n".join(lines)


def dataset_config(config: Any, data: str, data_path: str | None,
                   data_config: Any = None) -> Any:
  """The run's config with ``config.data`` pointed at ``--data`` (and ``--data_path``).

  ``data_config`` (a ``config.data`` section, e.g. of ``evaluate.py --config=FILE``) replaces
  the run's data section first.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  if data_config is not None:
    config.data = ml_collections.ConfigDict(data_config.to_dict())
  source, _, path = data.partition(":")
  if source not in (*SOURCES, "levin"):  # Levin's pairs are a folder, scored aligned.
    raise UserError(f"--data={data!r}: expected gopro, kohler, synthetic, frames[:PATH], mix, "
                    "folder:PATH or levin:PATH")
  if source in ("folder", "levin") and not path:
    raise UserError(f"--data={source} needs a path: --data={source}:PATH with PATH/blur and "
                    "PATH/sharp")
  config.data.source = "folder" if source == "levin" else source
  if source == "frames" and path:
    config.data.frames.path = path
  elif path or data_path:
    config.data.path = path or data_path
  return config


def examples_of(config: Any, max_images: int = 0, what: str = "") -> Iterable[dict[str, Any]]:
  """The evaluation pairs of ``config.data.eval_split``, listed and checked once.

  Args:
    config: a config whose ``data`` section names the dataset.
    max_images: only the first N (0: all).
    what: the flag that named the dataset, for the error message.

  Returns:
    An iterable of examples (decoded lazily, one at a time).

  Raises:
    UserError: the split holds no pairs (or its files do not pair up).
  """
  examples = input_pipeline.create(config, config.data.eval_split, training=False)
  if not len(examples):
    raise UserError(f"{what or '--config.data.source=' + config.data.source}: no evaluation "
                    "images found")
  return itertools.islice(examples, max_images) if max_images > 0 else examples


def sharp_as_input(examples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
  """The pairs with each sharp image as the input too: the identity check.

  A deblurring model should give a sharp photo back unchanged (PSNR against itself at least
  :data:`SHARP_INPUT_TARGET_DB`); a model that learned a bias of its training blur (a
  brightness shift, a sharpening halo) shows it here, with no blur to hide it.
  """
  for ex in examples:
    yield {**ex, "blur": ex["sharp"]}


def run(ckpt: str, data: str, out_dir: str | None, data_path: str | None = None,
        max_images: int = 0, dtype: str = "float32", saliency: bool = True,
        data_config: Any = None, ensemble: bool = False, sharp_input: bool = False,
        tile_size: int | None = None, tile_overlap: int | None = None) -> dict[str, Any]:
  """The work behind ``evaluate.py``: load the checkpoint, evaluate, write the outputs.

  ``ckpt`` is a training run's path, ``"pretrained[:NAME]"`` (the shipped model), a model
  file ``NAME.npz`` or ``"unsharp"`` (Pillow's unsharp mask, a classical baseline);
  ``data_config`` optionally replaces the run's ``config.data`` (see :func:`dataset_config`);
  ``ensemble`` restores with the geometric self-ensemble (8 flips/transposes);
  ``sharp_input`` gives the model each pair's sharp image instead of the blurred one
  (:func:`sharp_as_input`; no blurred-input columns, ``psnr_min`` names the worst image);
  ``tile_size`` and ``tile_overlap`` override the model's ``config.eval`` tiling.
  """
  full_resolution.check_tiling(tile_size, tile_overlap)  # Before the model loads.
  if out_dir:
    _summary_files(OutputFolder(out_dir, PROGRAM))  # Before the model loads.
  if ckpt == baselines.UNSHARP:  # A classical baseline under the same protocol.
    model_config = config_defaults.get_config()
    step, deblurrer = None, baselines.unsharp_mask
  else:
    model_config, variables, step = loading.load_generator(ckpt)
    deblurrer = deblurrer_for(model_config, variables, dtype=dtype, ensemble=ensemble,
                              tile_size=tile_size, tile_overlap=tile_overlap)
  config = dataset_config(model_config, data, data_path, data_config)
  examples = examples_of(config, max_images, f"--data={data}")
  if sharp_input:
    examples = sharp_as_input(examples)
  result = evaluate(deblurrer, examples, out_dir, num_figures=config.eval.num_figures,
                    saliency=saliency, aligned=data.startswith("levin:"),
                    baseline=not sharp_input,
                    info=dict(checkpoint=ckpt, step=step, data=data, dtype=dtype,
                              ensemble=ensemble, sharp_as_input=sharp_input,
                              tile_size=tile_size, tile_overlap=tile_overlap))
  return result
