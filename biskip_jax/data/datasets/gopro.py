"""GoPro (Nah et al., CVPR 2017): read from the unpacked folder, or built into array_record.

Layout of ``GOPRO_Large`` (from https://seungjunnah.github.io/Datasets/gopro)::

  GOPRO_Large/{train,test}/<sequence>/{blur,blur_gamma,sharp}/NNNNNN.png

2103 train and 1111 test pairs, 1280x720. ``blur`` frames average the recorded frames as stored
(gamma-encoded), ``blur_gamma`` after gamma correction (in approximately linear light); most
papers use ``blur``. ``config.data.blur_kind`` picks one. A pair is
``<sequence>/<blur_kind>/F`` with ``<sequence>/sharp/F``; its name is ``"<sequence>/F"``.

Two ways to read it:

* straight from the folder (the default, ``config.data.gopro_format = "folder"``):
  :func:`list_pairs` + :class:`~biskip_jax.data.datasets.FilePairSource`;
* as a TFDS dataset (``config.data.gopro_format = "tfds"``): :class:`GoProDataset` is a
  ``GeneratorBasedBuilder`` reading the folder as its manual directory and writing
  ``array_record`` shards with the images as their PNG bytes; :class:`TfdsPairSource` reads
  them back (random access, no TensorFlow needed: TFDS 4.9 builds and reads array_record
  without it). Build it once with :func:`prepare_tfds`, e.g.
  ``prepare_tfds("data/GOPRO_Large", "blur", data_dir="data/tfds")``.
"""

import os
from typing import Any

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from biskip_jax.data import datasets, image_io
from biskip_jax.errors import UserError

URL = "https://seungjunnah.github.io/Datasets/gopro"
EXPECTED_PAIRS = {"train": 2103, "test": 1111}
_WARNED = set()  # (root, split) whose unexpected pair count was logged already.
_EXPECTED = ("{root}/{{train,test}}/<sequence>/{{blur,blur_gamma,sharp}}/NNNNNN.png (unzip "
             f"GOPRO_Large.zip from {URL}, then pass --config.data.path=/path/to/GOPRO_Large)")


def _missing(root: str, what: str) -> UserError:
  hint = ""
  if os.path.isdir(os.path.join(root, "GOPRO_Large")):
    hint = f" Did you mean --config.data.path={os.path.join(root, 'GOPRO_Large')}?"
  return UserError(f"GoPro dataset not found: {what} (--config.data.path={root}). Expected "
                   f"{_EXPECTED.format(root=root)}.{hint}")


def list_pairs(root: str, split: str, blur_kind: str = "blur") -> list[datasets.Pair]:
  """Lists the pairs of one split, sorted by sequence and frame.

  Args:
    root: the ``GOPRO_Large`` folder.
    split: ``"train"`` or ``"test"`` (any subfolder of ``root``).
    blur_kind: ``"blur"`` or ``"blur_gamma"`` (``datasets.BLUR_KINDS``).

  Returns:
    The pairs, named ``"<sequence>/<frame file>"``.

  Raises:
    UserError: the folder is missing or laid out differently (the message says where it
      looked and what it expected), or a blurred frame has no sharp frame.
  """
  if not os.path.isdir(root):
    raise _missing(root, f"{root} does not exist or is not a folder")
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    raise _missing(root, f"no split folder {split_dir} (subfolders there: {found or 'none'})")
  sequences = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
  if not sequences:
    raise _missing(root, f"{split_dir} has no sequence folders")
  pairs, extra_sharp = [], []
  for seq in sequences:
    blur_dir = os.path.join(split_dir, seq, blur_kind)
    sharp_dir = os.path.join(split_dir, seq, "sharp")
    for d in (blur_dir, sharp_dir):
      if not os.path.isdir(d):
        raise _missing(root, f"sequence folder {os.path.join(split_dir, seq)} has no "
                       f"{os.path.basename(d)}/ subfolder")
    blur_files = image_io.list_images(blur_dir)
    sharp_files = set(image_io.list_images(sharp_dir))
    for f in blur_files:
      if f not in sharp_files:
        raise UserError(f"GoPro blurred frame {os.path.join(blur_dir, f)} has no sharp frame "
                        f"{os.path.join(sharp_dir, f)}. Re-extract the sequence from the "
                        f"GoPro archive ({URL}) or delete the blurred frame.")
      pairs.append(datasets.Pair(f"{seq}/{f}", os.path.join(blur_dir, f),
                                 os.path.join(sharp_dir, f)))
    extra_sharp += [os.path.join(sharp_dir, f) for f in sorted(sharp_files - set(blur_files))]
  if extra_sharp:
    logging.warning("GoPro: %d sharp frames without a %s frame ignored, e.g. %s",
                    len(extra_sharp), blur_kind, extra_sharp[0])
  expected = EXPECTED_PAIRS.get(split)
  if expected and len(pairs) != expected and (root, split) not in _WARNED:
    _WARNED.add((root, split))
    logging.warning("GoPro %s split at %s has %d pairs; the full dataset has %d.", split, root,
                    len(pairs), expected)
  return pairs


class GoProDataset(tfds.core.GeneratorBasedBuilder):
  """GoPro deblurring pairs built from a manual download into array_record files.

  One builder config per input kind: ``gopro/blur`` and ``gopro/blur_gamma``. Examples are
  ``{"name": str, "blur": png image, "sharp": png image}`` in sorted order (shuffling during
  the build is disabled so that evaluation order is the folder's order).
  """

  name = "gopro"
  # TFDS derives this from the package via importlib_resources, which TFDS 4.9.10 does not
  # install; the builder has no checksums or metadata files next to it anyway.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: PNG bytes of blur (or blur_gamma) and sharp."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="blur", description="Frames averaged as stored."),
      tfds.core.BuilderConfig(name="blur_gamma",
                              description="Frames averaged after gamma correction."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download GOPRO_Large.zip from {URL} (it cannot be downloaded automatically), unzip it and
  pass the GOPRO_Large folder as the manual directory, e.g.
  `tfds.download.DownloadConfig(manual_dir="data/GOPRO_Large")` or
  `biskip_jax.data.datasets.gopro.prepare_tfds("data/GOPRO_Large", "blur")`. It must contain
  train/<sequence>/{{blur,blur_gamma,sharp}}/NNNNNN.png and the same under test/.
  """

  def __init__(self, **kwargs: Any):
    kwargs.setdefault("file_format", tfds.core.FileFormat.ARRAY_RECORD)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("GoPro_Large blurred/sharp frame pairs (Nah, Kim and Lee, Deep multi-scale "
                     "CNN for dynamic scene deblurring, CVPR 2017)."),
        features=tfds.features.FeaturesDict({
            "name": tfds.features.Text(),
            "blur": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "sharp": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
        }),
        supervised_keys=("blur", "sharp"),
        homepage=URL,
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(root, split) for split in ("train", "test")}

  def _generate_examples(self, root: str, split: str):
    pairs = list_pairs(root, split, self.builder_config.name)
    datasets.check_pair_sizes(pairs)
    for p in pairs:
      yield p.name, {"name": p.name, "blur": p.blur, "sharp": p.sharp}


def prepare_tfds(path: str, blur_kind: str = "blur", data_dir: str | None = None
                 ) -> GoProDataset:
  """Builds the array_record dataset from ``path`` (``GOPRO_Large``) unless already built.

  Args:
    path: the manual directory (``GOPRO_Large``).
    blur_kind: builder config, ``"blur"`` or ``"blur_gamma"``.
    data_dir: TFDS data directory; None uses TFDS' default (``~/tensorflow_datasets``).

  Returns:
    The prepared builder.
  """
  builder = GoProDataset(config=blur_kind, data_dir=data_dir or None)
  if not builder.is_prepared():
    list_pairs(path, "train", blur_kind)  # Fails early with a clear message.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(path)))
  return builder


class TfdsPairSource:
  """A split of a built :class:`GoProDataset`, with the interface of ``FilePairSource``."""

  def __init__(self, builder: GoProDataset, split: str):
    if split not in builder.info.splits:
      raise UserError(f"GoPro TFDS dataset at {builder.data_dir} has no split {split!r}; it has "
                      f"{sorted(builder.info.splits)}.")
    skip = tfds.decode.SkipDecoding()
    self._source = builder.as_data_source(split=split, decoders={"blur": skip, "sharp": skip})
    self._where = builder.data_dir

  def __len__(self) -> int:
    return len(self._source)

  def _record(self, index: int) -> dict[str, Any]:
    return self._source[index]

  def name(self, index: int) -> str:
    name = self._record(index)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)

  def load(self, index: int) -> dict[str, Any]:
    """Decodes example ``index``: ``{"name", "blur", "sharp"}``, uint8 HxWx3."""
    rec = self._record(index)
    name = rec["name"].decode() if isinstance(rec["name"], bytes) else str(rec["name"])
    where = f"{name} in {self._where}"
    blur = image_io.decode_image(rec["blur"], f"{where} (blur)")
    sharp = image_io.decode_image(rec["sharp"], f"{where} (sharp)")
    return {"name": name, "blur": blur, "sharp": sharp}
