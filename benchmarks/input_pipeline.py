r"""Training input pipeline throughput on a GoPro-like folder of 1280x720 PNGs.

Builds, in a temporary folder, ``--num_pairs`` GoPro-layout pairs (scikit-image photos resized
to 1280x720, blurred with :mod:`biskip_jax.data.blur`), then prints random 256x256 crops per second
for 0, 1 and 2 worker processes, with and without ``data.cache_decoded`` and with
``data.crops_per_image``. Throughput is measured after a warm-up (worker start, and for the
cache two epochs so that every worker holds the frames it sees).

  python -m benchmarks.input_pipeline            # full table (a few minutes on 2 cores)
  python -m benchmarks.input_pipeline --quick    # smoke test: tiny set, few batches
"""

import os
import platform
import tempfile
import time

import numpy as np
from absl import app, flags, logging

from biskip_jax.data import blur, datasets, input_pipeline
from biskip_jax.data.datasets import synthetic
from configs import biskip

_QUICK = flags.DEFINE_bool("quick", False, "Tiny dataset and few batches (smoke test).")
_NUM_PAIRS = flags.DEFINE_integer("num_pairs", 24, "Pairs of 1280x720 PNGs to generate.")
_BATCHES = flags.DEFINE_integer("batches", 12, "Timed batches per setting.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Crops per batch.")
_CROP = flags.DEFINE_integer("crop_size", 256, "Crop side.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Worker counts to measure.")


def make_gopro_folder(root: str, num_pairs: int, size: tuple[int, int] = (720, 1280)) -> None:
  """Writes ``num_pairs`` pairs as ``root/train/SEQ/{blur,sharp}/NNNNNN.png``."""
  from skimage import transform  # Only the benchmark resizes.
  rng = np.random.default_rng(0)
  photos = [synthetic.load_skimage_photo(n) for n in synthetic.SKIMAGE_PHOTOS]
  for i in range(num_pairs):
    photo = photos[i % len(photos)]
    sharp = (transform.resize(photo, size, anti_aliasing=True) * 255).round().astype(np.uint8)
    blurred = blur.blur_image(sharp, blur.random_kernel(rng, 31), rng)
    seq = f"GOPR{i // 8:04d}_00_00"
    for kind, img in (("blur", blurred), ("sharp", sharp)):
      datasets.save_image(os.path.join(root, "train", seq, kind, f"{i % 8 + 1:06d}.png"), img)


def machine() -> str:
  mem = ""
  try:
    with open("/proc/meminfo") as f:
      mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB RAM, "
  except OSError:
    pass
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), cpu)
  except OSError:
    pass
  import grain
  import PIL
  load = "load average %.2f %.2f %.2f" % os.getloadavg()  # Other jobs skew the numbers.
  return (f"{cpu}, {os.cpu_count()} cores, {mem}{load}, Python {platform.python_version()}, "
          f"Pillow {PIL.__version__}, grain {grain.__version__}, {platform.platform()}")


def measure(config, warmup: int, batches: int) -> tuple[float, float]:
  """Returns (seconds to the first batch, crops per second after ``warmup`` batches)."""
  t0 = time.perf_counter()
  it = input_pipeline.create(config, "train")
  try:
    next(it)
    first = time.perf_counter() - t0
    for _ in range(warmup):
      next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
      batch = next(it)
    rate = batches * batch["blur"].shape[0] / (time.perf_counter() - t1)
  finally:
    if hasattr(it, "close"):
      it.close()
  return first, rate


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # The table only.
  quick = _QUICK.value
  num_pairs = 4 if quick else _NUM_PAIRS.value
  batches = 2 if quick else _BATCHES.value
  bs = 2 if quick else _BATCH_SIZE.value
  workers = [int(w) for w in _WORKERS.value]
  print(f"Machine: {machine()}")
  with tempfile.TemporaryDirectory() as root:
    t = time.perf_counter()
    make_gopro_folder(root, num_pairs)
    print(f"Dataset: {num_pairs} GoPro-layout pairs of 1280x720 PNGs "
          f"({time.perf_counter() - t:.1f} s to build); {bs} crops of "
          f"{_CROP.value}x{_CROP.value} per batch, {batches} timed batches.\n")
    config = biskip.get_config()
    config.train.batch_size = bs
    d = config.data
    d.source, d.path, d.crop_size, d.prefetch = "gopro", root, _CROP.value, 4
    settings = [(w, False, 1) for w in workers] + [(w, True, 1) for w in workers]
    settings += [(max(workers), False, 4)]
    if quick:  # Worker start-up dominates: one in-process and one worker setting.
      settings = [(min(workers), False, 1), (max(workers), True, 2)]
    print(f"{'workers':>7} {'cache_decoded':>13} {'crops/image':>11} {'first batch s':>13} "
          f"{'crops/s':>9}")
    for w, cache, per_image in settings:
      d.num_workers, d.cache_decoded, d.crops_per_image = w, cache, per_image
      epoch = num_pairs * per_image // bs
      warmup = (4 * epoch if cache else 1) if not quick else 1
      first, rate = measure(config, warmup, batches)
      print(f"{w:>7} {str(cache):>13} {per_image:>11} {first:>13.2f} {rate:>9.1f}", flush=True)


if __name__ == "__main__":
  app.run(main)
