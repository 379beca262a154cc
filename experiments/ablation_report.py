r"""Tables, paired comparisons and curves of an ablation run (``experiments.ablation``).

  python -m experiments.ablation_report --workdir=runs/ablation --out=docs/ablation.md

Reads what the ablation wrote (``WORKDIR/ablation.json``, every run's ``ablation_result.json``
and ``metrics.jsonl``) and writes, from those files alone:

* ``OUT`` (default ``WORKDIR/ablation.md``): per evaluation dataset, PSNR and SSIM as mean ±
  standard deviation over seeds per scheme, with the blurred input as a row and the paper's
  GoPro figures (Table 1) beside them for reference; the paired comparisons of the paper's
  claims; the validation curves; and which orderings hold, by the rule below;
* next to ``OUT``: ``ablation_psnr.png`` (validation PSNR against steps per scheme: the mean
  over seeds, the band from the lowest to the highest seed), ``ablation.csv`` (one row per
  scheme and dataset), ``ablation_runs.csv`` (one per run and dataset) and
  ``ablation_pairs.csv`` (one per comparison and dataset).

Statistics: the standard deviation is the sample one (``ddof=1``) over seeds. A paired
difference is ``Δ_s = metric(A, seed s) - metric(B, seed s)``: both runs of seed ``s`` start
from the same seed and see the same training data in the same order, so ``Δ_s`` removes the
variation that seeds share. Comparisons are oriented as the paper claims (A better), and an
ordering is said to *hold* when every seed's ``Δ_s > 0``, to be *reversed* when every seed's
``Δ_s < 0``, and to be *unresolved* otherwise.

The comparisons are derived from the schemes that were run (:func:`comparisons`):

* architecture (Table 1's A2 row): BS > BS-cR > BS-w/o-R > S, neighbours in that order among
  the variants run with the same loss letters;
* self-paced learning: ``S<L>-V`` against ``<L>-V`` (the paper's SA1P-BS against A1P-BS);
* pixel loss: ``1`` against ``2`` with everything else equal (Table 1's 1-BS, 2-BS);
* adversarial term: ``A<L>-V`` against ``<L>-V``.
"""

import csv
import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np
from absl import app, flags

from biskip_jax import cli
from biskip_jax.errors import UserError
from biskip_jax.objective import schemes
from biskip_jax.output_files import atomic_write
from biskip_jax.train.logs import writers

FLAGS = flags.FLAGS
SETTINGS_FILE = "ablation.json"
RESULT_FILE = "ablation_result.json"
FIGURE = "ablation_psnr.png"
# The paper's claimed order of the generator bodies, best first (Table 1, A2 row).
ARCHITECTURE_ORDER = ("BS", "BS-cR", "BS-w/o-R", "S")
SUMMARY_COLUMNS = ("scheme", "dataset", "seeds", "psnr_mean", "psnr_std", "ssim_mean",
                   "ssim_std", "gain_mean", "above_input", "blurred_psnr", "blurred_ssim",
                   "paper_psnr", "paper_ssim", "train_seconds_mean", "note")
RUN_COLUMNS = ("scheme", "seed", "dataset", "psnr", "ssim", "blurred_psnr", "blurred_ssim",
               "num_images", "train_seconds")
PAIR_COLUMNS = ("kind", "better", "worse", "dataset", "seeds", "delta_psnr", "delta_psnr_mean",
                "delta_psnr_std", "better_in", "delta_ssim_mean", "paper_delta_psnr",
                "paper_reference", "verdict")


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  flags.DEFINE_string("workdir", None, "The ablation's --workdir.")
  flags.DEFINE_string("out", None, "Markdown file to write (default WORKDIR/ablation.md); the "
                      "figure and CSV files go next to it.")
  flags.mark_flags_as_required(["workdir"])


def scheme_dirname(name: str) -> str:
  """A folder name for a scheme (``A2-BS-w/o-R`` -> ``A2-BS-w_o-R``)."""
  return name.replace("/", "_")


def run_dir(workdir: str, scheme: str, seed: int) -> str:
  """Where the ablation trains ``scheme`` with ``seed``: ``WORKDIR/<scheme>/seed<seed>``."""
  return os.path.join(workdir, scheme_dirname(scheme), f"seed{seed}")


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A claim of the paper: ``better`` beats ``worse`` (``kind``: what differs)."""
  kind: str
  better: str
  worse: str


def _without(name: str, letter: str) -> str:
  losses, variant = name.split("-", 1)
  return f"{losses.replace(letter, '', 1)}-{variant}"


def comparisons(names: Sequence[str]) -> list[Comparison]:
  """The paper's claims that the schemes ``names`` can test (see the module docstring)."""
  present = set(names)
  parsed = [schemes.parse_scheme(n) for n in names]
  out = []
  prefixes = list(dict.fromkeys(s.name.split("-", 1)[0] for s in parsed))
  for losses in prefixes:
    variants = [v for v in ARCHITECTURE_ORDER if f"{losses}-{v}" in present]
    out += [Comparison("architecture", f"{losses}-{a}", f"{losses}-{b}")
            for a, b in zip(variants, variants[1:])]
  for s in parsed:
    if s.self_paced and _without(s.name, "S") in present:
      out.append(Comparison("self-paced", s.name, _without(s.name, "S")))
  for s in parsed:
    l2 = s.name.replace("1", "2", 1)
    if s.pixel == "l1" and l2 in present:
      out.append(Comparison("L1 vs L2", s.name, l2))
  for s in parsed:
    plain = _without(s.name, "A")
    if s.adversarial and plain in present:
      out.append(Comparison("adversarial", s.name, plain))
  return out


def paper_reference(c: Comparison) -> tuple[float, str] | None:
  """Table 1's PSNR difference for ``c``, or for its nearest analogue there (named)."""
  if c.better in schemes.TABLE1 and c.worse in schemes.TABLE1:
    a, b = c.better, c.worse
  elif c.kind == "architecture":
    a, b = (f"A2-{n.split('-', 1)[1]}" for n in (c.better, c.worse))
  else:
    a, b = {"self-paced": ("SA1P-BS", "A1P-BS"), "L1 vs L2": ("1-BS", "2-BS"),
            "adversarial": ("A2-BS", "2-BS")}[c.kind]
  if a not in schemes.TABLE1 or b not in schemes.TABLE1:
    return None
  return schemes.TABLE1[a][0] - schemes.TABLE1[b][0], f"{a} − {b}"


def read_json(path: str) -> dict[str, Any]:
  """The JSON object in ``path`` (the settings and result files)."""
  with open(path) as f:
    return json.load(f)


def load(workdir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """``(settings, finished runs)`` of an ablation workdir.

  Raises:
    UserError: ``workdir`` holds no ``ablation.json`` (not an ablation, or one made before
      seeds were kept).
  """
  path = os.path.join(workdir, SETTINGS_FILE)
  if not os.path.isfile(path):
    raise UserError(f"--workdir={workdir}: no {SETTINGS_FILE} (not the workdir of "
                    "python -m experiments.ablation)")
  settings = read_json(path)
  runs = []
  for name in settings["schemes"]:
    for seed in settings["seeds"]:
      result = os.path.join(run_dir(workdir, name, seed), RESULT_FILE)
      if os.path.isfile(result):
        runs.append(read_json(result))
  return settings, runs


def _by_seed(runs: Sequence[dict[str, Any]], scheme: str, dataset: str,
             key: str) -> dict[int, float]:
  """``{seed: evals[dataset][key]}`` of ``scheme``'s runs that have that value."""
  out = {}
  for r in runs:
    value = r.get("evals", {}).get(dataset, {}).get(key)
    if r["scheme"] == scheme and value is not None:
      out[r["seed"]] = value
  return out


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
  """Mean and sample standard deviation (``ddof=1``; None with fewer than 2 values)."""
  if not values:
    return None, None
  x = np.asarray(values, np.float64)
  return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else None)


def scheme_summary(settings: dict[str, Any], runs: Sequence[dict[str, Any]],
                   dataset: str) -> list[dict[str, Any]]:
  """One row per scheme (:data:`SUMMARY_COLUMNS`) on ``dataset``, in the run's order.

  ``gain_mean`` is the mean over seeds of PSNR minus the blurred input's PSNR, and
  ``above_input`` reads ``k/n``: the seeds whose PSNR is above the blurred input's.
  """
  rows = []
  for name in settings["schemes"]:
    psnr = _by_seed(runs, name, dataset, "psnr")
    ssim = _by_seed(runs, name, dataset, "ssim")
    blurred = _by_seed(runs, name, dataset, "blurred_psnr")
    seeds = sorted(psnr)
    gains = [psnr[s] - blurred[s] for s in seeds if s in blurred]
    paper = schemes.TABLE1.get(name, (None, None))
    own = [r for r in runs if r["scheme"] == name]
    pm, ps = _mean_std([psnr[s] for s in seeds])
    sm, ss = _mean_std([ssim[s] for s in seeds])
    seconds = [r["train_seconds"] for r in own if r.get("train_seconds") is not None]
    blurred_ssim = _by_seed(runs, name, dataset, "blurred_ssim")
    rows.append({
        "scheme": name, "dataset": dataset, "seeds": len(seeds), "psnr_mean": pm,
        "psnr_std": ps, "ssim_mean": sm, "ssim_std": ss, "gain_mean": _mean_std(gains)[0],
        "above_input": f"{sum(g > 0 for g in gains)}/{len(gains)}" if gains else None,
        "blurred_psnr": _mean_std(list(blurred.values()))[0],
        "blurred_ssim": _mean_std(list(blurred_ssim.values()))[0],
        "paper_psnr": paper[0], "paper_ssim": paper[1],
        "train_seconds_mean": _mean_std(seconds)[0],
        "note": next((r["note"] for r in own if r.get("note")), settings.get("notes", {})
                     .get(name, ""))})
  return rows


def verdict(deltas: Sequence[float]) -> str:
  """``holds`` (every Δ_s > 0), ``reversed`` (every Δ_s < 0) or ``unresolved``."""
  if not deltas:
    return "not run"
  if all(d > 0 for d in deltas):
    return "holds"
  if all(d < 0 for d in deltas):
    return "reversed"
  return "unresolved"


def paired(runs: Sequence[dict[str, Any]], c: Comparison, dataset: str) -> dict[str, Any]:
  """Paired differences ``better - worse`` over the seeds both schemes finished."""
  a, b = (_by_seed(runs, n, dataset, "psnr") for n in (c.better, c.worse))
  a_ssim, b_ssim = (_by_seed(runs, n, dataset, "ssim") for n in (c.better, c.worse))
  seeds = sorted(set(a) & set(b))
  deltas = [a[s] - b[s] for s in seeds]
  mean, std = _mean_std(deltas)
  ref = paper_reference(c)
  return {"kind": c.kind, "better": c.better, "worse": c.worse, "dataset": dataset,
          "seeds": seeds, "delta_psnr": deltas, "delta_psnr_mean": mean, "delta_psnr_std": std,
          "better_in": f"{sum(d > 0 for d in deltas)}/{len(deltas)}",
          "delta_ssim_mean": _mean_std([a_ssim[s] - b_ssim[s] for s in seeds])[0],
          "paper_delta_psnr": ref[0] if ref else None, "paper_reference": ref[1] if ref else "",
          "verdict": verdict(deltas)}


def dataset_label(spec: str) -> str:
  """A dataset for a heading: a folder by its name, not its machine's path."""
  source, _, path = spec.partition(":")
  return f"{source}:{os.path.basename(path.rstrip('/'))}" if path else source


def _pm(mean: float | None, std: float | None, digits: int, sign: bool = False) -> str:
  if mean is None:
    return ""
  return _num(mean, digits, sign) + (f" ± {std:.{digits}f}" if std is not None else "")


def _num(value: float | None, digits: int, sign: bool = False) -> str:
  if value is None:
    return ""
  return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _scheme_table(rows: Sequence[dict[str, Any]]) -> list[str]:
  lines = ["| scheme | seeds | PSNR | SSIM | PSNR − input | above input | paper PSNR (GoPro) "
           "| paper SSIM (GoPro) | note |",
           "|:---|---:|---:|---:|---:|---:|---:|---:|:---|"]
  for r in rows:
    lines.append(f"| {r['scheme']} | {r['seeds']} | {_pm(r['psnr_mean'], r['psnr_std'], 2)} | "
                 f"{_pm(r['ssim_mean'], r['ssim_std'], 4)} | {_num(r['gain_mean'], 2, True)} | "
                 f"{r['above_input'] or ''} | {_num(r['paper_psnr'], 2)} | "
                 f"{_num(r['paper_ssim'], 4)} | {r['note']} |")
  blurred = [r for r in rows if r["blurred_psnr"] is not None]
  if blurred:
    lines.append(f"| (blurred input) | | {blurred[0]['blurred_psnr']:.2f} | "
                 f"{blurred[0]['blurred_ssim']:.4f} | | | | | no restoration |")
  return lines


def _pair_table(pairs: Sequence[dict[str, Any]]) -> list[str]:
  lines = ["| claim (paper) | kind | Δ PSNR per seed (dB) | Δ PSNR mean ± std | better in | "
           "Δ SSIM mean | paper Δ PSNR | verdict |",
           "|:---|:---|:---|---:|---:|---:|:---|:---|"]
  for p in pairs:
    per_seed = ", ".join(f"s{s}: {d:+.2f}" for s, d in zip(p["seeds"], p["delta_psnr"]))
    paper = (f"{p['paper_delta_psnr']:+.2f} ({p['paper_reference']})"
             if p["paper_delta_psnr"] is not None else "")
    lines.append(f"| {p['better']} > {p['worse']} | {p['kind']} | {per_seed} | "
                 f"{_pm(p['delta_psnr_mean'], p['delta_psnr_std'], 2, True)} | {p['better_in']} | "
                 f"{_num(p['delta_ssim_mean'], 4, True)} | {paper} | {p['verdict']} |")
  return lines


def markdown(settings: dict[str, Any], runs: Sequence[dict[str, Any]],
             figure: str | None) -> str:
  """The report (see the module docstring); ``figure``: the plot's path relative to it."""
  datasets = [settings["data"]] + [d for d in settings.get("eval_data", [])
                                   if d != settings["data"]]
  expected = len(settings["schemes"]) * len(settings["seeds"])
  lines = ["# The paper's Table 1 claims at CPU scale", "",
           f"Generated by `python -m experiments.ablation_report` from the runs of "
           f"`{settings.get('command') or 'python -m experiments.ablation'}` "
           f"({len(runs)} of {expected} runs finished: {len(settings['schemes'])} schemes x "
           f"seeds {', '.join(map(str, settings['seeds']))}).", "",
           settings.get("setup", ""), "",
           "Mean ± sample standard deviation over seeds. The paper's columns are Table 1 "
           "(GoPro test set, 300 epochs, full width, batch 1): for reference only, not "
           "comparable with these runs. Δ is a paired difference (same seed, same data order); "
           "an ordering *holds* when every seed agrees with the paper, is *reversed* when every "
           "seed disagrees, and is *unresolved* otherwise."]
  claims = comparisons(settings["schemes"])
  for d in datasets:
    held_out = " (the training data's held-out split)" if d == settings["data"] else ""
    lines += ["", f"## {dataset_label(d)}{held_out}", ""]
    lines += _scheme_table(scheme_summary(settings, runs, d))
    if claims:
      lines += ["", "Paired comparisons:", ""]
      lines += _pair_table([paired(runs, c, d) for c in claims])
  if figure:
    lines += ["", "## Validation PSNR during training", "",
              f"![validation PSNR against steps]({figure})", "",
              "Mean over seeds per scheme; the band spans the lowest and highest seed."]
  if claims:
    lines += ["", "## Which of the paper's orderings hold at this scale", ""]
    for c in claims:
      verdicts = []
      for d in datasets:
        p = paired(runs, c, d)
        if p["seeds"]:
          verdicts.append(f"{dataset_label(d)}: {p['verdict']} ({p['better_in']} seeds, "
                          f"{p['delta_psnr_mean']:+.2f} dB)")
      lines.append(f"- {c.kind}, {c.better} > {c.worse}: " + ("; ".join(verdicts)
                                                              or "not run"))
  return "\n".join(lines) + "\n"


def validation_curves(workdir: str, settings: dict[str, Any]) -> dict[str, dict[int, Any]]:
  """``{scheme: {seed: (steps, psnr)}}`` of the validation rows in each run's log."""
  curves: dict[str, dict[int, Any]] = {}
  for name in settings["schemes"]:
    for seed in settings["seeds"]:
      path = run_dir(workdir, name, seed)
      if not os.path.isfile(os.path.join(path, writers.METRICS_FILE)):
        continue
      series = writers.read_metrics(path).get("eval", {})
      if "psnr" in series:
        curves.setdefault(name, {})[seed] = series["psnr"]
  return curves


def plot(workdir: str, settings: dict[str, Any], runs: Sequence[dict[str, Any]],
         out: str) -> bool:
  """Validation PSNR against steps per scheme (mean over seeds, min-max band) in ``out``.

  Returns:
    False (and writes nothing) when no run logged a validation.
  """
  curves = validation_curves(workdir, settings)
  if not curves:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 5))
  for name, by_seed in curves.items():
    common = sorted(set.intersection(*(set(steps.tolist()) for steps, _ in by_seed.values())))
    if not common:
      continue
    values = np.array([[dict(zip(steps.tolist(), psnr))[s] for s in common]
                       for steps, psnr in by_seed.values()])
    line, = ax.plot(common, values.mean(axis=0), marker=".", label=f"{name} ({len(by_seed)})")
    if len(by_seed) > 1:
      ax.fill_between(common, values.min(axis=0), values.max(axis=0), alpha=0.15,
                      color=line.get_color())
  blurred = [v for name in curves
             for v in _by_seed(runs, name, settings["data"], "blurred_psnr").values()]
  if blurred:
    ax.axhline(float(np.mean(blurred)), color="k", linestyle="--", linewidth=1,
               label="blurred input")
  ax.set_xlabel("generator step")
  ax.set_ylabel("validation PSNR (dB)")
  ax.set_title(f"Validation PSNR ({dataset_label(settings['data'])}); seeds in brackets")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return True


def _write_csv(path: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
  with atomic_write(path, "w") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for r in rows:
      writer.writerow(["" if r.get(c) is None else
                       (";".join(map(str, r[c])) if isinstance(r[c], list) else r[c])
                       for c in columns])


def write(workdir: str, out: str | None = None) -> str:
  """Writes the report, figure and CSV files (see the module docstring); returns ``out``.

  Raises:
    UserError: not an ablation workdir, or ``out`` cannot be written.
  """
  settings, runs = load(workdir)
  out = out or os.path.join(workdir, "ablation.md")
  folder = os.path.dirname(os.path.abspath(out))
  try:
    os.makedirs(folder, exist_ok=True)
    datasets = [settings["data"]] + [d for d in settings.get("eval_data", [])
                                     if d != settings["data"]]
    _write_csv(os.path.join(folder, "ablation.csv"), SUMMARY_COLUMNS,
               [r for d in datasets for r in scheme_summary(settings, runs, d)])
    _write_csv(os.path.join(folder, "ablation_runs.csv"), RUN_COLUMNS, [
        {**r, **e, "dataset": d} for r in runs for d, e in r.get("evals", {}).items()])
    _write_csv(os.path.join(folder, "ablation_pairs.csv"), PAIR_COLUMNS, [
        paired(runs, c, d) for d in datasets for c in comparisons(settings["schemes"])])
    drawn = plot(workdir, settings, runs, os.path.join(folder, FIGURE))
    text = markdown(settings, runs, FIGURE if drawn else None)
    with atomic_write(out, "w") as f:
      f.write(text)
  except OSError as e:
    raise UserError(f"--out={out}: cannot write the report ({e})") from e
  return out


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  out = write(FLAGS.workdir, FLAGS.out)
  print(f"wrote {out} (and {FIGURE}, ablation*.csv next to it)")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
