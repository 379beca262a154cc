r"""Self-paced learning over a run: v_i, λ and q(t) per epoch (paper §4.3, eq. 9–11).

  python -m experiments.plot_spl --workdir=runs/biskip --out=runs/biskip/spl.png

Reads ``WORKDIR/metrics.jsonl`` written by training. Self-paced runs log, every
``train.log_every`` steps, a ``"split": "spl"`` row with that step's per-sample bi-level
losses l_i (eq. 4) and weights v_i (eq. 11); from those the script draws the distribution of
v_i per epoch. Runs without them (older logs) still give the batch mean and minimum of v
(``v_mean``, ``v_min`` of the train rows), λ and q.

Writes the PNG (three panels: v_i per epoch, λ_t, q(t) against eq. 10) and, next to it, a
CSV of the per-epoch summary (epoch, lam, q, v quantiles, share of v_i = 0, samples), which it
also prints.
"""

import csv
import json
import math
import os
from typing import Any

import numpy as np
from absl import app, flags

from biskip_jax import cli
from biskip_jax.errors import UserError
from biskip_jax.train.logs import writers

FLAGS = flags.FLAGS
SUMMARY_COLUMNS = ("epoch", "lam", "q", "v_min", "v_q25", "v_median", "v_q75", "v_max",
                   "v_mean", "v_zero_fraction", "samples", "source")


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  flags.DEFINE_string("workdir", None, "Training workdir holding metrics.jsonl.")
  flags.DEFINE_string("out", None, "PNG to write (default: WORKDIR/spl.png); the per-epoch "
                      "CSV goes next to it.")
  flags.mark_flags_as_required(["workdir"])


def read_metrics(workdir: str) -> dict[str, Any]:
  """Parses ``WORKDIR/metrics.jsonl``.

  A step logged twice (a run rewound by divergence recovery) keeps its last row.

  Returns:
    ``{"train": {step: row}, "spl": {step: row}, "run": last "run" row or {}}``.

  Raises:
    UserError: no metrics.jsonl, unreadable lines, or no training rows.
  """
  path = os.path.join(workdir, writers.METRICS_FILE)
  if not os.path.isfile(path):
    raise UserError(f"--workdir={workdir}: no metrics.jsonl (not a training workdir, or "
                    "training has not logged yet)")
  out: dict[str, Any] = {"train": {}, "spl": {}, "run": {}}
  for row in writers.read_rows(workdir):
    if row["split"] == "run":
      out["run"] = row
    elif row["split"] in ("train", "spl"):
      out[row["split"]][row["step"]] = row
  if not out["train"] and not out["spl"]:
    raise UserError(f"{path}: no training rows yet")
  return out


def _steps_per_epoch(metrics: dict[str, Any]) -> int:
  spe = metrics["run"].get("steps_per_epoch")
  if spe:
    return int(spe)
  # Without a "run" row, infer the epoch length from the spl rows (each has its epoch).
  for step, row in sorted(metrics["spl"].items()):
    if row.get("epoch", 1) > 1:
      return max(1, math.ceil((step - 1) / (row["epoch"] - 1)))
  return max([1, *metrics["train"], *metrics["spl"]])


def epoch_summary(metrics: dict[str, Any]) -> list[dict[str, Any]]:
  """One row per epoch: λ, q and the distribution of v_i (:data:`SUMMARY_COLUMNS`).

  v_i come from the ``spl`` rows (``source = "per-sample"``); without them, from the train
  rows' batch means and minima (``source = "batch mean/min"``: quantiles are over the batch
  means, ``v_min`` is the smallest batch minimum).
  """
  spe = _steps_per_epoch(metrics)
  epoch_of = lambda step: (step - 1) // spe + 1
  epochs: dict[int, dict[str, Any]] = {}
  for step, row in sorted(metrics["spl"].items()):
    e = epochs.setdefault(int(row.get("epoch", epoch_of(step))), {"v": [], "lam": [], "q": []})
    e["v"].extend(row["v"])
    e["lam"].append(row["lam"])
    e["q"].append(row["q"])
  source = "per-sample" if epochs else "batch mean/min"
  if not epochs:
    for step, row in sorted(metrics["train"].items()):
      e = epochs.setdefault(epoch_of(step), {"v": [], "lam": [], "q": [], "v_min": []})
      e["v"].append(row.get("v_mean", 1.0))
      e["v_min"].append(row.get("v_min", 1.0))
      e["lam"].append(row.get("lam", math.inf))
      e["q"].append(row.get("q", math.nan))
  rows = []
  for epoch, e in sorted(epochs.items()):
    v = np.asarray(e["v"], np.float64)
    q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    rows.append({"epoch": epoch, "lam": float(e["lam"][-1]), "q": float(e["q"][-1]),
                 "v_min": float(min(e.get("v_min", v))), "v_q25": float(q25),
                 "v_median": float(med), "v_q75": float(q75), "v_max": float(v.max()),
                 "v_mean": float(v.mean()), "v_zero_fraction": float(np.mean(v == 0.0)),
                 "samples": int(v.size), "source": source})
  return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
  """The per-epoch summary as a text table."""
  lines = [f"{'epoch':>5} {'lambda':>10} {'q':>9} {'v_min':>6} {'v_q25':>6} {'v_med':>6} "
           f"{'v_q75':>6} {'v_mean':>6} {'v=0':>5} {'n':>5}"]
  for r in rows:
    lines.append(f"{r['epoch']:5d} {r['lam']:10.4g} {r['q']:9.4g} {r['v_min']:6.3f} "
                 f"{r['v_q25']:6.3f} {r['v_median']:6.3f} {r['v_q75']:6.3f} "
                 f"{r['v_mean']:6.3f} {r['v_zero_fraction']:5.2f} {r['samples']:5d}")
  if rows:
    lines.append(f"(v from {rows[0]['source']} values)")
  return "\n".join(lines)


def plot(metrics: dict[str, Any], rows: list[dict[str, Any]], path: str, title: str) -> None:
  """Writes the three-panel figure: v_i per epoch, λ_t, q(t) (logged and eq. 10)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  from biskip_jax.objective import spl
  spe = _steps_per_epoch(metrics)
  fig, (ax_v, ax_l, ax_q) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
  epochs = [r["epoch"] for r in rows]
  per_sample = bool(metrics["spl"])
  if per_sample:
    by_epoch: dict[int, list[float]] = {}
    for step, row in sorted(metrics["spl"].items()):
      by_epoch.setdefault(int(row.get("epoch", (step - 1) // spe + 1)), []).extend(row["v"])
    data = [by_epoch[e] for e in epochs]
    ax_v.boxplot(data, positions=epochs, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for e, vs in zip(epochs, data):
      ax_v.scatter(e + rng.uniform(-0.2, 0.2, len(vs)), vs, s=6, alpha=0.35, color="tab:blue")
    ax_v.set_title("self-paced weights v_i per epoch (eq. 11; boxes: quartiles, dots: samples)")
  else:
    ax_v.set_title("v per log step: batch mean and minimum (per-sample v_i not logged)")
  train = sorted(metrics["train"].items())
  if train:
    x = [0.5 + (s - 0.5) / spe for s, _ in train]  # Epoch e spans [e - 0.5, e + 0.5].
    ax_v.plot(x, [r.get("v_mean", 1.0) for _, r in train], lw=1, color="tab:green",
              label="batch mean v")
    ax_v.plot(x, [r.get("v_min", 1.0) for _, r in train], lw=1, color="tab:red",
              label="batch min v")
    ax_v.legend(loc="lower left", fontsize=8)
  ax_v.set_ylim(-0.05, 1.05)
  ax_v.set_ylabel("v_i")

  finite = [(r["epoch"], r["lam"]) for r in rows if math.isfinite(r["lam"])]
  if finite:
    ax_l.plot(*zip(*finite), "o-", color="tab:purple")
    lams = [lam for _, lam in finite]
    if min(lams) > 0 and max(lams) > 10 * min(lams):
      ax_l.set_yscale("log")
  inf_epochs = [r["epoch"] for r in rows if not math.isfinite(r["lam"])]
  for e in inf_epochs:
    ax_l.axvline(e, color="tab:gray", ls=":", lw=1)
  if inf_epochs:
    ax_l.text(inf_epochs[0], 0.5, " λ = ∞ (all v_i = 1)", transform=ax_l.get_xaxis_transform(),
              fontsize=8, color="tab:gray")
  ax_l.set_ylabel("λ_t (max l_i of epoch t-1)")
  ax_l.set_title("age parameter λ (Algorithm 1, line 10)")

  logged = [(r["epoch"], r["q"]) for r in rows if math.isfinite(r["q"])]
  if logged:
    ax_q.plot(*zip(*logged), "o", color="tab:orange", label="logged q")
  total = int(metrics["run"].get("total_epochs") or max(epochs or [1]))
  t = np.linspace(1, total, 200)
  curve = [spl.q_schedule(float(v), total) for v in t]
  ax_q.plot(t, curve, color="tab:gray", lw=1, label=f"eq. 10, T = {total}")
  if max(curve) > 10 * min(curve):
    ax_q.set_yscale("log")
  ax_q.set_xlabel("epoch t")
  ax_q.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # After boxplot.
  ax_q.set_ylabel("q(t)")
  ax_q.set_title("SPL exponent q(t) (eq. 10)")
  ax_q.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_summary_csv(path: str, rows: list[dict[str, Any]]) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def run(workdir: str, out: str | None = None) -> list[dict[str, Any]]:
  """Reads the run's logs, writes ``out`` (PNG) and its CSV; returns the per-epoch rows."""
  metrics = read_metrics(workdir)
  rows = epoch_summary(metrics)
  out = out or os.path.join(workdir, "spl.png")
  if not out.lower().endswith(".png"):
    raise UserError(f"--out={out}: expected a .png path")
  title = os.path.basename(os.path.abspath(workdir))
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      config = json.load(f)
    scheme = config.get("scheme", "?")
    title = title if title == scheme.replace("/", "_") else f"{title} ({scheme})"
    if not config.get("loss", {}).get("self_paced", True):
      title += ": not self-paced, v_i = 1"
  plot(metrics, rows, out, title)
  write_summary_csv(os.path.splitext(out)[0] + ".csv", rows)
  return rows


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  rows = run(FLAGS.workdir, FLAGS.out)
  print(format_summary(rows))
  out = FLAGS.out or os.path.join(FLAGS.workdir, "spl.png")
  print(f"wrote {out} and {os.path.splitext(out)[0]}.csv")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
