"""Trains the shipped model's recipe on a GPU machine lent for minutes, in one call.

  bash benchmarks/gpu_train.sh OUT                  # on the GPU machine: at most 9 minutes
  bash benchmarks/gpu_train.sh OUT --tiny           # tiny model on CPU (what the tests run)

It needs only the standard library itself, as it runs before anything is known to import:

1. **Environment**: modules the training imports that fail are unpacked from the wheelhouse
   (``--wheelhouse``, default ``.whl/``; ``python -m benchmarks.wheelhouse --set=train``
   builds it for the machine's Python, compiled wheels included), as ``gpu.sh`` does.
2. **Training**: ``train.py --config=configs/pretrain.py`` on the carried data subset
   (``--data``, default ``.gpu_data/`` with ``frames/`` and ``photos/``:
   ``python -m benchmarks.gpu_data`` builds it, at most 30 MB), warm-started from the shipped
   model, bfloat16 compute, batch 16, a constant learning rate (the run's length is whatever
   the deadline allows), a checkpoint every minute, validation off. At ``budget - 60 s`` it is
   sent SIGTERM: it saves a final checkpoint and stops.
3. **Export**: the generator of the last checkpoint as ``OUT/biskip_gpu.npz`` in float16 (a
   device call returns files of at most 16 MiB; the full model is 12 MB so) with its
   ``biskip_gpu.json``, plus ``train_log.txt``, ``metrics.jsonl`` and ``summary.json``.

Back on the CPU machine the model is validated and, if the shipping rule says so, shipped::

  python evaluate.py --ckpt=OUT/biskip_gpu.npz --data=...       # loads float16 as float32
  python -m biskip_jax.cli.pretrained --ckpt=OUT/biskip_gpu.npz      # float32, as shipped

Exit status: 0 when a model was written, 1 when training or export failed, 2 without a usable
environment or data.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks import gpu_run

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules train.py and the export import -> the distribution that provides each.
TRAIN_REQUIRED = {
    "jax": "jax", "flax": "flax", "optax": "optax", "orbax.checkpoint": "orbax-checkpoint",
    "ml_collections": "ml_collections", "absl": "absl-py", "grain": "grain",
    "array_record": "array_record", "portpicker": "portpicker", "clu": "clu",
    "tensorboardX": "tensorboardX", "numpy": "numpy", "scipy": "scipy", "PIL": "pillow",
    "skimage": "scikit-image", "tqdm": "tqdm",
}

_MARGIN_S = 60  # Left after training for the final checkpoint and the export.
_NAME = "biskip_gpu"


def overrides(data: str, workdir_budget: float, tiny: bool, batch: int) -> dict[str, object]:
  """``--config.FIELD=VALUE`` settings of the run on top of ``configs/pretrain.py``."""
  o: dict[str, object] = {
      "data.frames.path": os.path.join(data, "frames"),
      "data.synthetic.images": os.path.join(data, "photos"),
      "data.synthetic.holdout_every": 0,  # Validation happens on the CPU machine.
      "data.synthetic.holdout": "()",
      "data.frames.eval_range": "(0.0,0.0)",
      "data.num_workers": 12,  # 16 cores: averaging frames for 16 crops a step keeps up.
      "train.init_from": "pretrained",
      "train.compute_dtype": "bfloat16",
      "train.batch_size": batch,
      "train.num_steps": 1_000_000,  # Stopped by the deadline, not by the step count.
      "optim.decay_start": 1.0,  # A constant rate: the length is not known in advance.
      "train.checkpoint_every": 1_000_000,
      "train.checkpoint_every_secs": 60,
      "train.eval_every": 0,
      "train.image_every": 0,
      "train.log_every": 20,
  }
  if tiny:  # configs/tiny.py's sizes; no warm start (the shipped model is full width).
    o.update({"model.channels": "(4,8,8,8,8)", "model.skip_channels": "(2,4,4,4)",
              "model.num_res_blocks": 1, "data.crop_size": 32, "data.num_workers": 0,
              "train.init_from": "", "train.compute_dtype": "float32", "train.log_every": 1,
              "train.checkpoint_every_secs": max(5, int(workdir_budget / 4)),
              "data.synthetic.kernel_size": 9, "data.frames.window": "(2,3)"})
  return o


def _stream(proc: subprocess.Popen, log: gpu_run._Log) -> threading.Thread:
  reader = threading.Thread(target=lambda: [log(line) for line in proc.stdout], daemon=True)
  reader.start()
  return reader


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_train_out")
  parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (a dry run)")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="seconds for everything (default 540; --tiny: 150)")
  parser.add_argument("--data", default=os.path.join(_ROOT, ".gpu_data"),
                      help="folder with frames/ and photos/ (python -m benchmarks.gpu_data)")
  parser.add_argument("--wheelhouse", default=os.path.join(_ROOT, ".whl"))
  parser.add_argument("--python", default=os.environ.get("PYTHON") or sys.executable)
  parser.add_argument("--batch", type=int, default=None, help="global batch (16; --tiny: 2)")
  parser.add_argument("--margin_s", type=float, default=_MARGIN_S,
                      help="seconds kept after training for its last checkpoint and the export")
  args = parser.parse_args(argv)
  budget = args.budget_s or (150.0 if args.tiny else 540.0)
  margin = min(args.margin_s, budget / 2)
  start = time.monotonic()
  os.makedirs(args.out, exist_ok=True)
  log = gpu_run._Log(os.path.join(args.out, "train_log.txt"))
  summary = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 gpu=gpu_run._gpu_line(), tiny=args.tiny, budget_s=budget)
  log(f"GPU: {summary['gpu'] or 'none'}; budget {budget:.0f} s; out {args.out}")

  def finish(code: int) -> int:
    summary["seconds"] = round(time.monotonic() - start, 1)
    summary["exit"] = code
    with open(os.path.join(args.out, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)
    log(f"done in {summary['seconds']:.0f} s, exit {code}")
    log.close()
    return code

  for sub in ("frames", "photos"):
    if not os.path.isdir(os.path.join(args.data, sub)):
      log(f"error: {os.path.join(args.data, sub)} is missing: build the subset with "
          "`python -m benchmarks.gpu_data` and carry it")
      return finish(2)
  work = tempfile.mkdtemp(prefix="biskip_gpu_train_")
  site = os.path.join(work, "site")
  os.makedirs(site)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (site, _ROOT, env.get("PYTHONPATH")) if p)
  if args.tiny:
    env["JAX_PLATFORMS"] = "cpu"
  missing = gpu_run.missing_modules(args.python, env, TRAIN_REQUIRED)
  if missing:
    log(f"not importable: {', '.join(missing)}")
    unpacked = gpu_run.install_wheels(args.wheelhouse, [TRAIN_REQUIRED[m] for m in missing],
                                      site)
    log(f"unpacked from {args.wheelhouse}: {', '.join(unpacked) or 'nothing'}")
    missing = gpu_run.missing_modules(args.python, env, TRAIN_REQUIRED)
  summary["missing"] = missing
  if missing:
    log(f"error: still not importable: {', '.join(missing)}; build the wheelhouse with "
        "`python -m benchmarks.wheelhouse --set=train` and carry .whl")
    return finish(2)

  workdir = os.path.join(work, "run")
  batch = args.batch or (2 if args.tiny else 16)
  settings = overrides(args.data, budget, args.tiny, batch)
  cmd = [args.python, os.path.join(_ROOT, "train.py"), "--config=configs/pretrain.py",
         f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in settings.items())]
  summary["command"] = " ".join(cmd[1:]).replace(work, "$WORK")
  log(f"== train until {budget - margin:.0f} s: {summary['command']}")
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=_ROOT, bufsize=1)
  reader = _stream(proc, log)
  try:
    proc.wait(timeout=max(budget - margin - (time.monotonic() - start), 1))
  except subprocess.TimeoutExpired:
    proc.send_signal(signal.SIGTERM)  # A final checkpoint, then exit 143.
    try:
      proc.wait(timeout=margin / 2)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  reader.join(timeout=10)
  summary["train_exit"] = proc.returncode
  log(f"== train.py exited with {proc.returncode}")
  metrics = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(metrics):
    shutil.copyfile(metrics, os.path.join(args.out, "metrics.jsonl"))

  export = [args.python, "-m", "biskip_jax.cli.pretrained", f"--ckpt={workdir}",
            f"--name={_NAME}", f"--out_dir={args.out}", "--dtype=float16"]
  left = max(budget - (time.monotonic() - start) - 5, margin / 2)
  status, seconds = gpu_run.run_part(export, env, left, log)
  summary["export"] = status
  npz = os.path.join(args.out, _NAME + ".npz")
  if status != "ok" or not os.path.exists(npz):
    log(f"error: export {status}")
    return finish(1)
  summary["model_mib"] = round(os.path.getsize(npz) / 2**20, 2)
  log(f"== {npz}: {summary['model_mib']} MiB in {seconds:.0f} s")
  shutil.rmtree(work, ignore_errors=True)
  return finish(0)


if __name__ == "__main__":
  sys.exit(main())
