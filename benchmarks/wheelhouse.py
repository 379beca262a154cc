"""Builds the wheelhouse ``.whl/`` that ``benchmarks/gpu.sh`` carries to a GPU machine.

  python -m benchmarks.wheelhouse                  # the default packages, pinned
  python -m benchmarks.wheelhouse NAME==VERSION    # others

The GPU machine has no network. It has jax with CUDA, flax, optax, orbax, absl, PyYAML,
numpy, scipy, Pillow, scikit-image and torch, but not the rest of ``requirements.txt``; of
that rest the benchmarks need only :data:`DEFAULT` (``ml_collections``, plus ``absl-py`` in
case). This downloads their pure-Python wheels (``py3-none-any``, no dependencies: those are
on the machine) at the versions pinned in ``requirements.txt`` into ``.whl/`` (git-ignored),
refuses anything that is not pure Python (an x86-64 or CPython-version build made here might
not load there), and prints the size. Then copy ``.whl/`` with the checkout to the GPU machine
and run ``bash benchmarks/gpu.sh`` there.

``--set=train`` adds what ``benchmarks/gpu_train.sh`` (training) needs: grain and array_record
are compiled, so their wheels are downloaded for ``--python_version`` on manylinux x86-64 (the
GPU machine's platform), not for this machine.
"""

import argparse
import os
import re
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = ("ml_collections", "absl-py")
# What train.py needs beyond the GPU image (benchmarks/gpu_train.py): grain and array_record
# are compiled, so their wheels are those of the GPU machine's Python on manylinux x86-64.
SETS = {"bench": DEFAULT,
        "train": DEFAULT + ("grain", "array_record", "portpicker", "clu", "tensorboardX")}
_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64",
              "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")
MAX_BYTES = 8 * 2**20  # Leaves the rest of the 64 MiB for the working tree.


def pinned(name: str, requirements: str = os.path.join(_ROOT, "requirements.txt")) -> str:
  """``name==version`` as pinned in requirements.txt (``name`` alone if it is not pinned)."""
  key = re.sub(r"[-_.]+", "-", name).lower()
  with open(requirements) as f:
    for line in f:
      req = line.split("#", 1)[0].strip()
      if "==" in req and re.sub(r"[-_.]+", "-", req.split("==")[0]).lower() == key:
        return req
  return name


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("packages", nargs="*", help="requirement specifiers (default: "
                      f"{', '.join(DEFAULT)} at their requirements.txt pins)")
  parser.add_argument("--dest", default=os.path.join(_ROOT, ".whl"))
  parser.add_argument("--python_version", default="3.12",
                      help="the GPU machine's Python (its image has 3.12)")
  parser.add_argument("--set", default="bench", choices=sorted(SETS),
                      help="bench: what gpu.sh needs (pure Python); train: what gpu_train.sh "
                      "needs (compiled wheels for --python_version on manylinux x86-64 too)")
  args = parser.parse_args(argv)
  specs = args.packages or [pinned(p) for p in SETS[args.set]]
  compiled = args.set == "train"
  os.makedirs(args.dest, exist_ok=True)
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--python-version", args.python_version, "-d", args.dest, *specs]
  if compiled:
    cmd[-len(specs):-len(specs)] = [a for p in _PLATFORMS for a in ("--platform", p)]
  print(" ".join(cmd[2:]), flush=True)
  if subprocess.run(cmd).returncode != 0:
    print(f"error: pip download failed for {' '.join(specs)}", file=sys.stderr)
    return 1
  total = 0
  for name in sorted(os.listdir(args.dest)):
    path = os.path.join(args.dest, name)
    tag = "cp" + args.python_version.replace(".", "")
    if not (name.endswith("-none-any.whl") or (compiled and f"-{tag}-" in name
                                                  and "x86_64" in name)):
      os.remove(path)
      print(f"error: {name} is neither pure Python nor a {tag} x86-64 wheel; removed (build "
            "it on the GPU machine's platform instead)", file=sys.stderr)
      return 1
    total += os.path.getsize(path)
    print(f"{name}  {os.path.getsize(path) / 1024:.0f} KiB")
  print(f"{args.dest}: {total / 2**20:.2f} MiB in all")
  if total > MAX_BYTES:
    print(f"error: over {MAX_BYTES / 2**20:.0f} MiB: a device call carries 64 MiB in all",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
