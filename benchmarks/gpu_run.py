"""The whole GPU measurement in one call, within a time budget, tables under OUT.

  bash benchmarks/gpu.sh OUT                 # on a CUDA machine: about 7 minutes, set-up included
  bash benchmarks/gpu.sh OUT --tiny          # the same steps with tiny sizes (CPU; what CI runs)
  python3 -m benchmarks.gpu_run --out=OUT    # what gpu.sh runs

It needs only the standard library itself, because it runs before anything is known to
import. In order:

1. **Environment.** In a child process it imports what the benchmarks need (jax, flax, optax,
   orbax, ml_collections, absl, torch, numpy, scipy, Pillow, scikit-image). For each module
   that fails it unpacks the matching wheel of ``--wheelhouse`` (default ``.whl/``, built by
   ``python -m benchmarks.wheelhouse`` on a machine with network) into a site folder put first
   on ``PYTHONPATH`` for every later step, and imports again; still missing, it stops with one
   line naming the modules. A GPU machine without network typically lacks ``ml_collections``.
2. **Parts**, each a subprocess with its own timeout cut to what is left of ``--budget_s``
   (see :data:`PARTS`, most important first; a part that no longer fits is skipped and says
   so). Every part writes its table as JSON after each row, so a part stopped by its timeout
   keeps the rows it measured. The like-for-like check of the JAX code against
   ``benchmarks/torch_reference.py`` runs at the start of the inference part (forward passes)
   and of the train-step part (one full step).
3. **Report** under OUT (at most 8 files come back from a device call): ``results.md`` (every
   table as Markdown with the device line, check, notes, each part's status and the issue's
   targets, met or not), ``results.json`` (the same as data), ``log.txt`` (all output) and
   ``trace_train_step.tar.gz`` (a ``jax.profiler`` trace of 3 steps of the paper's batch-1
   train step; open the unpacked folder with TensorBoard's profile plugin or Perfetto).

Exit status: 0 when every part finished, 1 when some part failed or was cut, 2 when the
environment is unusable.
"""

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Module imported -> distribution whose wheel provides it (wheel names are normalised).
REQUIRED = {
    "jax": "jax", "flax": "flax", "optax": "optax", "orbax.checkpoint": "orbax-checkpoint",
    "ml_collections": "ml_collections", "absl": "absl-py", "yaml": "PyYAML", "torch": "torch",
    "numpy": "numpy", "scipy": "scipy", "PIL": "pillow", "skimage": "scikit-image",
}

_TRACE_NAME = "trace_train_step.tar.gz"
_MAX_FILE_BYTES = 15 * 2**20  # A device call brings back files up to 16 MiB.


@dataclasses.dataclass(frozen=True)
class Part:
  """One benchmark subprocess.

  Attributes:
    name: short name (JSON key, file stem).
    module: ``benchmarks.<module>`` run with ``-m``.
    args: its flags on a GPU.
    tiny_args: its flags with ``--tiny`` (None: skipped with ``--tiny``).
    seconds: its timeout when the budget allows (GPU).
    tiny_seconds: its timeout with ``--tiny``.
  """
  name: str
  module: str
  args: tuple[str, ...]
  tiny_args: tuple[str, ...] | None
  seconds: int
  tiny_seconds: int = 300


_INFER_CASES = "720x1280:1:float32,720x1280:1:bfloat16,2160x3840:1:bfloat16"

# Most important first: a part starts only while the budget has room for it.
PARTS = (
    Part("inference", "inference", ("--cases=" + _INFER_CASES, "--torch=eager"),
         ("--quick", "--cases=" + _INFER_CASES, "--torch=eager"), 110),
    Part("train_step", "train_step", ("--batches=1,16", "--dtypes=float32", "--torch=eager",
                                      "--trace={trace}"),
         ("--quick", "--nocheck", "--dtypes=float32", "--torch=eager", "--trace={trace}"),
         140),
    Part("train_step_bf16", "train_step", ("--batches=1,16", "--dtypes=bfloat16",
                                           "--torch=eager", "--nocheck"),
         ("--quick", "--nocheck", "--dtypes=bfloat16", "--torch=eager"), 90),
    Part("mixed_precision", "mixed_precision", (), ("--quick",), 110),
    Part("inference_compile", "inference",
         ("--cases=720x1280:1:float32,720x1280:1:bfloat16", "--torch=compile", "--nocheck"),
         None, 100),
    Part("train_step_compile", "train_step", ("--batches=1", "--torch=compile", "--nocheck"),
         None, 90),
)

_CHECK_IMPORTS = r"""
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
  try:
    importlib.import_module(name)
  except Exception as e:
    failed[name] = f"{type(e).__name__}: {e}"[:200]
print(json.dumps(failed))
"""


def _normalise(dist: str) -> str:
  return re.sub(r"[-_.]+", "_", dist).lower()


def missing_modules(python: str, env: dict[str, str],
                    required: dict[str, str] = REQUIRED) -> dict[str, str]:
  """Modules of ``required`` (:data:`REQUIRED`) that fail to import in ``python`` -> error."""
  proc = subprocess.run([python, "-c", _CHECK_IMPORTS, *required], capture_output=True,
                        text=True, env=env, cwd=_ROOT, timeout=180)
  if proc.returncode != 0:
    raise RuntimeError(f"{python} cannot run the import check: {proc.stderr[-500:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def install_wheels(wheelhouse: str, dists: list[str], site: str) -> list[str]:
  """Unpacks the wheels of ``dists`` found in ``wheelhouse`` into ``site``.

  Pure-Python wheels need nothing more than unpacking to be importable from a folder on
  ``PYTHONPATH`` (what ``pip install --target`` does, without needing pip or a network).

  Returns:
    The wheel files unpacked.
  """
  wanted = {_normalise(d) for d in dists}
  done = []
  if not os.path.isdir(wheelhouse):
    return done
  for name in sorted(os.listdir(wheelhouse)):
    if name.endswith(".whl") and _normalise(name.split("-", 1)[0]) in wanted:
      with zipfile.ZipFile(os.path.join(wheelhouse, name)) as z:
        z.extractall(site)
      done.append(name)
  return done


class _Log:
  """Writes lines to stdout and to the log file."""

  def __init__(self, path: str):
    self._f = open(path, "a", buffering=1)

  def __call__(self, text: str = "") -> None:
    for stream in (sys.stdout, self._f):
      stream.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()

  def close(self) -> None:
    self._f.close()


def run_part(cmd: list[str], env: dict[str, str], timeout: float, log: _Log) -> tuple[str, float]:
  """Runs ``cmd`` (output to the log), killed with its children after ``timeout`` seconds.

  Returns:
    ``(status, seconds)``: status "ok", "failed (exit N)" or "timed out after S s".
  """
  t0 = time.monotonic()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=_ROOT, start_new_session=True, bufsize=1)
  reader = threading.Thread(target=lambda: [log(line) for line in proc.stdout], daemon=True)
  reader.start()
  try:
    code = proc.wait(timeout=max(timeout, 1))
    status = "ok" if code == 0 else f"failed (exit {code})"
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # Our own child's process group.
    proc.wait()
    status = f"timed out after {timeout:.0f} s"
  reader.join(timeout=10)
  return status, time.monotonic() - t0


def _gpu_line() -> str:
  """nvidia-smi's name, memory, driver and clock, or "" where there is none."""
  if not shutil.which("nvidia-smi"):
    return ""
  try:
    proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,"
                           "clocks.max.sm", "--format=csv,noheader"], capture_output=True,
                          text=True, timeout=20)
  except (OSError, subprocess.TimeoutExpired):
    return ""
  return proc.stdout.strip()


def _cell(table: dict, row: list[str], column: str) -> float | None:
  try:
    return float(row[table["header"].index(column)])
  except (ValueError, IndexError):
    return None


def _rows(table: dict | None, **match: str) -> list[list[str]]:
  if not table:
    return []
  idx = {k: table["header"].index(k) for k in match}
  return [r for r in table["rows"] if all(r[idx[k]] == v for k, v in match.items())]


def targets(tables: dict[str, dict]) -> list[str]:
  """The issue's targets, each "met", "missed" or "not measured", with the figures."""
  lines = []
  inf = tables.get("inference")
  jax_rows = _rows(inf, size="720x1280", dtype="bfloat16", impl="JAX")
  eager_rows = _rows(inf, size="720x1280", dtype="bfloat16", impl="PyTorch eager")
  if jax_rows:
    ms = _cell(inf, jax_rows[0], "ms/image")
    line = f"720p bf16 inference ≤ 5 ms: {ms:.2f} ms, " + ("met" if ms <= 5 else "missed")
    t_ms = _cell(inf, eager_rows[0], "ms/image") if eager_rows else None
    if t_ms:
      speedup = t_ms / ms
      line += (f"; ≥ 2x PyTorch eager: {speedup:.2f}x, " + ("met" if speedup >= 2 else
                                                             "missed"))
    lines.append(line)
  else:
    lines.append("720p bf16 inference: not measured")
  rows_4k = _rows(inf, size="2160x3840", dtype="bfloat16", impl="JAX")
  if rows_4k:
    peak = _cell(inf, rows_4k[0], "device peak MB")
    plan = _cell(inf, rows_4k[0], "peak MB")
    worst = peak if peak is not None else plan
    if worst is None:
      lines.append("4K bf16 inference within 8 GB: no memory figure reported")
    else:
      lines.append(f"4K bf16 inference within 8 GB: device peak {peak} MB, XLA plan {plan} MB, "
                   + ("met" if worst <= 8192 else "missed"))
  else:
    lines.append("4K bf16 inference: not measured")
  ts = tables.get("train_step")
  jax_b1 = [r for r in _rows(ts, batch="1", impl="JAX") if r[0] == "SA1P-BS"]
  eager_b1 = [r for r in _rows(ts, batch="1", impl="PyTorch eager") if r[0] == "SA1P-BS"]
  if jax_b1 and eager_b1:
    j, t = _cell(ts, jax_b1[0], "steps/s"), _cell(ts, eager_b1[0], "steps/s")
    if j and t:
      lines.append(f"batch-1 SA1P-BS train step ≥ 1.5x PyTorch eager's rate: {j:.1f} against "
                   f"{t:.1f} steps/s ({j / t:.2f}x), " + ("met" if j >= 1.5 * t else "missed"))
  else:
    lines.append("batch-1 SA1P-BS train step against PyTorch eager: not measured")
  return lines


def _markdown_table(table: dict) -> list[str]:
  out = ["| " + " | ".join(table["header"]) + " |",
         "|" + "|".join("---" for _ in table["header"]) + "|"]
  out += ["| " + " | ".join(r) + " |" for r in table["rows"]]
  return out


def write_report(out: str, summary: dict) -> None:
  """``results.md`` and ``results.json`` from the parts' tables and statuses."""
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(summary, f, indent=1)
  md = [f"# biskip-jax GPU measurement ({summary['date']})", "",
        f"- GPU: {summary['gpu'] or 'none found (nvidia-smi)'}",
        f"- Python {summary['python']}; modules unpacked from the wheelhouse: "
        f"{', '.join(summary['env']['unpacked']) or 'none'}",
        f"- Mode: {'tiny (sizes mean nothing)' if summary['tiny'] else 'full'}; budget "
        f"{summary['budget_s']} s, used {summary['seconds']:.0f} s", ""]
  md += ["## Targets", ""] + [f"- {t}" for t in summary["targets"]] + [""]
  for name, part in summary["parts"].items():
    md += [f"## {name}: {part['status']} ({part['seconds']:.0f} s)", ""]
    md.append(f"`{part['command']}`")
    md.append("")
    table = part.get("table")
    if not table:
      md += ["No table.", ""]
      continue
    md += [f"{table['title']}", "", f"Device: {table['device']}", ""]
    if table.get("check"):
      md += ["Like-for-like check (relative L2 error, PyTorch vs JAX, same weights): "
             + ", ".join(f"{k} {v:.1e}" for k, v in table["check"].items()), ""]
    md += _markdown_table(table) + [""]
    md += [f"- {n}" for n in table.get("notes", [])] + ([""] if table.get("notes") else [])
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(md))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", default=os.environ.get("OUT") or "bench_out",
                      help="folder for the report (default $OUT, else bench_out)")
  parser.add_argument("--tiny", action="store_true",
                      default=os.environ.get("BISKIP_GPU_TINY") == "1",
                      help="tiny model and sizes, compile parts skipped (CPU check of the "
                      "script; also BISKIP_GPU_TINY=1)")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="seconds for everything, set-up included (default 450; --tiny: 900)")
  parser.add_argument("--wheelhouse", default=os.path.join(_ROOT, ".whl"),
                      help="wheels for modules the machine lacks (python -m benchmarks.wheelhouse)")
  parser.add_argument("--python", default=os.environ.get("PYTHON") or sys.executable,
                      help="interpreter for the benchmarks")
  parser.add_argument("--parts", default="",
                      help="comma-separated part names to run (default: all)")
  args = parser.parse_args(argv)
  budget = args.budget_s or (900.0 if args.tiny else 450.0)
  start = time.monotonic()
  deadline = start + budget
  os.makedirs(args.out, exist_ok=True)
  log = _Log(os.path.join(args.out, "log.txt"))
  work = tempfile.mkdtemp(prefix="biskip_gpu_")
  site = os.path.join(work, "site")
  os.makedirs(site)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (site, _ROOT, env.get("PYTHONPATH")) if p)
  # JAX and PyTorch share the GPU in one process: cap JAX's pool so PyTorch has room too.
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
  summary = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), gpu=_gpu_line(),
                 python=sys.version.split()[0], tiny=args.tiny, budget_s=budget, seconds=0.0,
                 env={}, parts={}, targets=[])
  log(f"GPU: {summary['gpu'] or 'none'}; budget {budget:.0f} s; out {args.out}")

  missing = missing_modules(args.python, env)
  unpacked = []
  if missing:
    log(f"not importable: {', '.join(f'{m} ({e})' for m, e in missing.items())}")
    unpacked = install_wheels(args.wheelhouse, [REQUIRED[m] for m in missing], site)
    log(f"unpacked from {args.wheelhouse}: {', '.join(unpacked) or 'nothing'}")
    missing = missing_modules(args.python, env)
  summary["env"] = dict(unpacked=unpacked, missing=missing)
  if missing:
    log(f"error: still not importable: {', '.join(missing)}; build the wheelhouse with "
        "`python -m benchmarks.wheelhouse` and carry .whl")
    summary["seconds"] = time.monotonic() - start
    write_report(args.out, summary)
    log.close()
    return 2

  wanted = [p for p in args.parts.split(",") if p]
  unknown = set(wanted) - {p.name for p in PARTS}
  if unknown:
    log(f"error: unknown --parts {', '.join(sorted(unknown))}; "
        f"choose from {', '.join(p.name for p in PARTS)}")
    return 2
  trace_dir = os.path.join(work, "trace")
  tables = {}
  all_ok = True
  for part in PARTS:
    if wanted and part.name not in wanted:
      continue
    flags = part.tiny_args if args.tiny else part.args
    record = dict(status="", seconds=0.0, command="")
    summary["parts"][part.name] = record
    if flags is None:
      record["status"] = "skipped (--tiny)"
      continue
    json_path = os.path.join(work, part.name + ".json")
    cmd = [args.python, "-m", f"benchmarks.{part.module}",
           *(f.format(trace=trace_dir) for f in flags), f"--json_out={json_path}"]
    record["command"] = " ".join(cmd[1:]).replace(work, "$WORK")
    left = deadline - time.monotonic() - 20  # 20 s kept for the report.
    limit = min(part.tiny_seconds if args.tiny else part.seconds, left)
    if limit < (5 if args.tiny else 30):
      record["status"] = f"skipped: {max(left, 0):.0f} s left of the budget"
      all_ok = False
      log(f"== {part.name}: {record['status']}")
      continue
    log(f"== {part.name} (timeout {limit:.0f} s): {record['command']}")
    record["status"], record["seconds"] = run_part(cmd, env, limit, log)
    all_ok &= record["status"] == "ok"
    log(f"== {part.name}: {record['status']} in {record['seconds']:.0f} s")
    if os.path.exists(json_path):
      with open(json_path) as f:
        record["table"] = tables[part.name] = json.load(f)

  if os.path.isdir(trace_dir):
    tar_path = os.path.join(args.out, _TRACE_NAME)
    with tarfile.open(tar_path, "w:gz") as tar:
      tar.add(trace_dir, arcname="trace_train_step")
    size = os.path.getsize(tar_path)
    if size > _MAX_FILE_BYTES:
      os.remove(tar_path)
      log(f"trace left out: {size / 2**20:.0f} MiB over the {_MAX_FILE_BYTES / 2**20:.0f} MiB "
          "a device call brings back")
    else:
      summary["trace"] = _TRACE_NAME
      log(f"trace: {_TRACE_NAME} ({size / 2**20:.1f} MiB)")
  summary["targets"] = targets(tables)
  summary["seconds"] = time.monotonic() - start
  write_report(args.out, summary)
  for line in summary["targets"]:
    log(f"target: {line}")
  log(f"done in {summary['seconds']:.0f} s: {os.path.join(args.out, 'results.md')}")
  log.close()
  shutil.rmtree(work, ignore_errors=True)
  return 0 if all_ok else 1


if __name__ == "__main__":
  sys.exit(main())
