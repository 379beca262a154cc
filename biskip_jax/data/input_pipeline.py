"""Input pipeline (DESIGN §7): training batches with grain, evaluation examples in order.

``create(config, split)`` serves every ``config.data.source`` ("gopro", "folder", "synthetic",
"kohler", "frames", and "mix": a weighted mixture of the others for training, their
concatenated evaluation pairs otherwise):

* the training split (``config.data.train_split``) gives an endless, resumable iterator of
  ``{"blur": uint8[b, c, c, 3], "sharp": uint8[b, c, c, 3]}``, ``b`` = the per-process batch
  (:func:`per_process_batch_size`), ``c = config.data.crop_size``: the same random window of
  blurred and sharp image, random horizontal/vertical flips (``data.random_flip``) and
  transposes (``data.random_transpose``), a new
  shuffle every epoch. Built with grain's ``MapDataset`` API:
  ``range(n).shuffle(seed).repeat() -> random_map(crop) -> batch -> mp_prefetch``. Every
  random number comes from grain's per-element generator (:func:`data_seed` and the element
  index), and whole batches are made inside one worker, so batches are the same for any
  ``data.num_workers``; ``it.get_state()`` / ``it.set_state()`` resume exactly (restore with
  the same number of workers). Call ``it.close()`` when done with worker processes.
* any other split (or ``training=False``) gives an :class:`EvalDataset`: full-resolution
  ``{"name", "blur", "sharp"}`` examples (``"sharp_frames"`` too for Köhler) in the dataset's
  sorted order, unbatched.

Unreadable training images are skipped with a :class:`~biskip_jax.data.datasets.BadImageWarning`
naming the file (another random record takes their place); if more than
``data.max_bad_fraction`` of the pairs a worker has read are bad, it raises ``UserError``.

Speed: decoding a 1280x720 PNG takes ~35 ms of one core, so a GoPro pair costs ~70 ms.
``data.cache_decoded`` keeps decoded pairs in each worker (LRU, ``data.cache_max_mb``; every
worker holds its own copy); ``data.crops_per_image = k`` takes k crops from each decoded pair
(they are consecutive elements: with a batch of >= k they share a batch and a decode, with
smaller batches they spread over consecutive batches, i.e. over workers). Neither changes
which crops a seed gives for a given k. ``benchmarks/input_pipeline.py`` measures them.
"""

import collections
import concurrent.futures
import functools
import os
import sys
import threading
import time
import warnings
from typing import Any, Iterator

import grain
import jax
import ml_collections
import numpy as np
from absl import flags, logging

from biskip_jax.config import config_checks
from biskip_jax.data import datasets
from biskip_jax.data.datasets import folder, frames, kohler, mixing, synthetic
from biskip_jax.errors import UserError

SOURCES, MIXABLE = datasets.SOURCES, datasets.MIXABLE
_MIN_CHECKED = 20  # Files read before data.max_bad_fraction is enforced (or all, if fewer).
_MAX_ATTEMPTS = 1000  # Records tried in a row to replace an unreadable one.


def per_process_batch_size(config: ml_collections.ConfigDict) -> int:
  """``config.train.batch_size`` (global) divided over ``jax.process_count()`` hosts."""
  batch, processes = config.train.batch_size, jax.process_count()
  if batch < 1 or batch % processes:
    raise UserError(f"--config.train.batch_size={batch} must be a positive multiple of the "
                    f"number of processes ({processes}).")
  return batch // processes


def data_seed(config: ml_collections.ConfigDict) -> int:
  """Seed of the data order, crops, flips and training kernels, in [0, 2**32):
  ``config.train.seed`` (synthetic evaluation pairs: ``data.synthetic.eval_seed``)."""
  return int(config.train.seed) % 2**32


def mix_names(config: ml_collections.ConfigDict) -> list[str]:
  """The sources of ``data.source = "mix"`` (weight > 0), in the order :func:`get_source`
  builds them: a mix's ``sources[j]`` is ``mix_names(config)[j]``."""
  return [n for n in MIXABLE if config.data.mix[n] > 0]


def get_source(config: ml_collections.ConfigDict, split: str, *, training: bool = False,
               check_sizes: bool = True) -> Any:
  """The examples of ``split`` for ``config.data.source``.

  Args:
    config: the full config (``config.data`` and :func:`data_seed` are read).
    split: a split name; for "synthetic", ``data.train_split`` selects the training images and
      anything else the held-out ones; "kohler" has one split; "folder" uses ``PATH/split``
      if it exists, else ``PATH``.
    training: the source feeds training (Köhler refuses; small images are checked).
    check_sizes: check blur/sharp sizes (and crop size when training) from file headers.

  Returns:
    A source with ``len()``, ``name(i)`` and ``load(i)`` (see :mod:`biskip_jax.data.datasets`).
  """
  d = config.data
  config_checks.check_data(config)
  if d.source == "mix":
    names = mix_names(config)
    if not names:
      raise UserError("--config.data.source=mix needs a weight > 0 in --config.data.mix for "
                      f"at least one of {', '.join(MIXABLE)}.")
    subs = []
    for n in names:
      sub = ml_collections.ConfigDict(config.to_dict())
      sub.data.source = n
      subs.append(get_source(sub, split, training=training, check_sizes=check_sizes))
    if split == d.train_split:
      return mixing.MixtureSource(subs, [d.mix[n] for n in names])
    return mixing.ConcatSource(subs)
  if d.source == "frames":
    fr = d.frames.to_dict()  # Fields named as FramesSource's arguments, but for these two:
    path, num_train = fr.pop("path"), fr.pop("num_train")
    return frames.FramesSource(
        frames.list_sequences(path), split="train" if split == d.train_split else "eval",
        num_examples=num_train, seed=data_seed(config), **fr)
  if d.source == "synthetic":
    # The blur's fields are named as SyntheticSource's arguments; these pick the records.
    sy = d.synthetic.to_dict()
    images, holdout, every = sy.pop("images"), sy.pop("holdout"), sy.pop("holdout_every")
    num_train, num_eval = sy.pop("num_train"), sy.pop("num_eval")
    eval_seed = sy.pop("eval_seed")
    which = "train" if split == d.train_split else "eval"
    return synthetic.SyntheticSource(
        synthetic.image_specs(images, holdout, which, every),
        num_examples=num_train if which == "train" else num_eval,
        seed=data_seed(config) if which == "train" else eval_seed % 2**32,
        split=which, max_anxiety=sy.pop("max_shake"), min_anxiety=sy.pop("min_shake"), **sy)
  if d.source == "gopro":
    # Imported here: tensorflow_datasets takes seconds to import, and only GoPro needs it.
    from biskip_jax.data.datasets import gopro  # pylint: disable=g-import-not-at-top
    if d.gopro_format == "tfds":
      return gopro.TfdsPairSource(
          gopro.prepare_tfds(d.path, d.blur_kind, d.tfds_data_dir or None), split)
    pairs = gopro.list_pairs(d.path, split, d.blur_kind)
  elif d.source == "folder":
    pairs = folder.list_pairs(d.path, split)
  else:
    if training:
      raise UserError("The Köhler benchmark is for evaluation only: train with "
                      "--config.data.source=gopro|folder|synthetic.")
    pairs = kohler.list_pairs(d.path)
  if check_sizes:
    strict = training and d.small_images == "error"
    datasets.check_pair_sizes(pairs, min_size=d.crop_size if strict else 0, flag_hint=(
        "Use --config.data.small_images=pad or a smaller --config.data.crop_size."))
  return datasets.FilePairSource(pairs)


def num_train_examples(config: ml_collections.ConfigDict) -> int:
  """Examples (crops) in one training epoch: training records x ``data.crops_per_image``."""
  source = get_source(config, config.data.train_split, training=True, check_sizes=False)
  return len(source) * config.data.crops_per_image


def _describe(source: Any, index: int) -> str:
  pairs = getattr(source, "pairs", None)
  return pairs[index].blur if pairs is not None else source.name(index)


class _TrainTransform:
  """grain ``random_map`` function: record index -> one aligned random crop pair."""

  def __init__(self, source: Any, d: ml_collections.ConfigDict):
    self._source = source
    self._crop = d.crop_size
    self._flip = d.random_flip
    self._transpose = d.random_transpose
    self._small = d.small_images
    self._max_bad = d.max_bad_fraction
    cache = d.cache_decoded
    self._cache_bytes = d.cache_max_mb * 2**20 if cache else float("inf")
    self._cache_items = sys.maxsize if cache else (2 if d.crops_per_image > 1 else 0)
    self.__setstate__(self.__dict__)

  def __getstate__(self) -> dict[str, Any]:  # Each worker starts with empty caches/counters.
    return {k: v for k, v in self.__dict__.items() if not k.startswith("_s_")}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._s_cache, self._s_bytes = collections.OrderedDict(), 0
    self._s_lock = threading.Lock()
    self._s_ok, self._s_bad = set(), set()

  def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    with self._s_lock:
      if index in self._s_cache:
        self._s_cache.move_to_end(index)
        return self._s_cache[index]
    ex = self._source.load(index)
    pair = (ex["blur"], ex["sharp"])
    size = pair[0].nbytes + pair[1].nbytes
    with self._s_lock:
      if self._cache_items and size <= self._cache_bytes and index not in self._s_cache:
        self._s_cache[index], self._s_bytes = pair, self._s_bytes + size
        while (self._s_bytes > self._cache_bytes or len(self._s_cache) > self._cache_items):
          _, old = self._s_cache.popitem(last=False)
          self._s_bytes -= old[0].nbytes + old[1].nbytes
    return pair

  def _check_bad_fraction(self) -> None:
    bad, checked = len(self._s_bad), len(self._s_bad) + len(self._s_ok)
    if checked >= min(_MIN_CHECKED, len(self._source)) and bad > self._max_bad * checked:
      raise UserError(f"{bad} of {checked} training files read so far are unreadable, more "
                      f"than --config.data.max_bad_fraction={self._max_bad}. Check the dataset "
                      "(see the warnings above for the files).")

  def _window(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(h - self._crop + 1)), int(rng.integers(w - self._crop + 1))

  def _crop_pair(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c = self._crop
    if hasattr(self._source, "random_crop"):  # Synthetic: blur only the crop's neighbourhood.
      pair = self._source.random_crop(index, c, rng)
      if pair is not None:
        return pair
    blur, sharp = self._load(index)
    h, w = blur.shape[:2]
    if h < c or w < c:
      if self._small == "error":
        raise UserError(f"Training image {_describe(self._source, index)} is {w}x{h} (WxH), "
                        f"smaller than the {c}x{c} crop. Use --config.data.small_images=pad or "
                        "a smaller --config.data.crop_size.")
      pad = ((0, max(c - h, 0)), (0, max(c - w, 0)), (0, 0))
      mode = "reflect" if min(h, w) > 1 else "edge"
      blur, sharp = np.pad(blur, pad, mode=mode), np.pad(sharp, pad, mode=mode)
      h, w = blur.shape[:2]
    top, left = self._window(h, w, rng)
    window = (slice(top, top + c), slice(left, left + c))
    return blur[window], sharp[window]

  def __call__(self, record: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    index = int(record)
    for _ in range(_MAX_ATTEMPTS):
      if index not in self._s_bad:
        try:
          blur, sharp = self._crop_pair(index, rng)
        except datasets.BadImageError as e:
          self._s_bad.add(index)
          warnings.warn(f"Skipping unreadable training pair {_describe(self._source, index)}: "
                        f"{e} ({len(self._s_bad)} bad of {len(self._s_bad) + len(self._s_ok)} "
                        "read by this worker).", datasets.BadImageWarning, stacklevel=2)
          self._check_bad_fraction()
        else:
          self._s_ok.add(index)
          if self._s_bad:
            self._check_bad_fraction()
          flips = rng.uniform(size=2) < 0.5
          if self._flip and flips[0]:
            blur, sharp = blur[:, ::-1], sharp[:, ::-1]
          if self._flip and flips[1]:
            blur, sharp = blur[::-1], sharp[::-1]
          # Drawn only when enabled, so that without it a seed gives the crops it always gave.
          if self._transpose and rng.uniform() < 0.5:
            blur, sharp = blur.transpose(1, 0, 2), sharp.transpose(1, 0, 2)
          return {"blur": np.ascontiguousarray(blur), "sharp": np.ascontiguousarray(sharp)}
      index = int(rng.integers(len(self._source)))
    raise UserError(f"No readable training pair found in {_MAX_ATTEMPTS} attempts; "
                    f"{len(self._s_bad)} files are unreadable. Check the dataset.")


def _nth_record(records: grain.MapDataset, every: int, index: int) -> int:
  return records[index // every]


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
  """grain ``worker_init_fn``: the worker exits within a second of its parent's end.

  A parent killed with SIGKILL cannot stop its workers, which would otherwise keep running
  (and holding memory) until they notice, a minute or more later.
  """
  del worker_index, worker_count
  parent = os.getppid()

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(1)

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _ensure_flags_parsed() -> None:
  # grain's worker processes read absl flags (e.g. --grain_py_traceback_filtering). Entry points
  # parse them through absl.app.run; from notebooks or tests, accept the defaults.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def create_train_iterator(config: ml_collections.ConfigDict, source: Any) -> Any:
  """Endless iterator of training batches over ``source`` (see the module docstring)."""
  d = config.data
  batch = per_process_batch_size(config)
  seed = data_seed(config)
  records = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat()
  every = d.crops_per_image
  if every > 1:
    records = grain.MapDataset.range(sys.maxsize).map(
        functools.partial(_nth_record, records, every))
  ds = records.random_map(_TrainTransform(source, d), seed=(seed + 1) % 2**32)
  ds = ds.batch(batch, drop_remainder=True)
  if jax.process_count() > 1:
    # Process p takes the p-th of every process_count() consecutive per-process batches, the
    # p-th part of the global batch: global batch j holds the same images in the same order for
    # any number of processes, and the iterator's position (batches read) carries over to
    # another number of processes on resume.
    ds = ds[jax.process_index()::jax.process_count()]
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=d.prefetch))
  if d.num_workers > 0:
    _ensure_flags_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.num_workers,
                                                     per_worker_buffer_size=d.prefetch),
                        worker_init_fn=_exit_with_parent)
  where = {"synthetic": lambda: d.synthetic.images, "frames": lambda: d.frames.path,
           "mix": lambda: ", ".join(f"{k} {v:g}" for k, v in d.mix.items() if v > 0)}
  logging.info("Training data: %d records from %s (%s), batches of %d per process, %d workers.",
               len(source), d.source, where.get(d.source, lambda: d.path)(), batch,
               d.num_workers)
  return iter(it)


class EvalDataset:
  """Full-resolution evaluation examples in the dataset's order; iterable more than once.

  ``ds[i]`` and iteration give ``{"name": str, "blur": uint8[H, W, 3], "sharp":
  uint8[H, W, 3]}`` (+ ``"sharp_frames"``: list of uint8[H, W, 3] for Köhler). Unreadable
  files raise :class:`~biskip_jax.data.datasets.BadImageError`: every image must count.
  """

  def __init__(self, source: Any, prefetch: int = 2):
    self.source = source
    self._prefetch = max(int(prefetch), 0)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(index)
    return self.source.load(index % len(self))

  @property
  def names(self) -> list[str]:
    return [self.source.name(i) for i in range(len(self))]

  def __iter__(self) -> Iterator[dict[str, Any]]:
    if not self._prefetch:
      yield from (self[i] for i in range(len(self)))
      return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Decode the next while one is used.
      pending = collections.deque(pool.submit(self.__getitem__, i)
                                  for i in range(min(self._prefetch, len(self))))
      for i in range(self._prefetch, len(self) + self._prefetch):
        example = pending.popleft().result()
        if i < len(self):
          pending.append(pool.submit(self.__getitem__, i))
        yield example


def create(config: ml_collections.ConfigDict, split: str, *,
           training: bool | None = None) -> Any:
  """Training iterator or evaluation dataset for ``split`` of ``config.data.source``.

  Args:
    config: the full config (``data``, ``train.batch_size``, ``train.seed``).
    split: a split name; ``config.data.train_split`` trains unless ``training`` says otherwise.
    training: force the training pipeline (True) or evaluation examples (False).

  Returns:
    For training, a grain ``DatasetIterator`` of batches with ``get_state()``/``set_state()``
    and ``close()``; otherwise an :class:`EvalDataset`.
  """
  training = split == config.data.train_split if training is None else training
  source = get_source(config, split, training=training)
  if not training:
    return EvalDataset(source, prefetch=config.data.prefetch)
  return create_train_iterator(config, source)
