"""The work behind ``deblur.py``: expand inputs, restore each image, report bad files.

Only regular files are read: a FIFO, a device or a socket named like an image, in a folder or
on the command line, is skipped unopened with one line. One bad input never stops the others;
the failures are returned (and printed) and ``deblur.py`` exits with status 1.

Inputs are never overwritten: an output path that is also an input file stops the run before
anything is written. Nothing else that ``deblur.py`` did not write is replaced either (see
:class:`~biskip_jax.output_files.OutputFolder`): a user's own ``OUT/a.png``, a link, or an
earlier result edited since gets a fresh name (``a_1.png``), reported on one line, as do inputs
that share a base name. Every output folder records the names it received; folder and glob
inputs skip the files recorded there (and the ``--out`` folder itself), so running the same
command again restores the same originals, not the previous run's results.
"""

import errno
import glob
import os
import sys
from typing import Iterable

from biskip_jax import cli
from biskip_jax.data.image_io import IMAGE_EXTENSIONS, BadImageError, load_image, save_image
from biskip_jax.errors import UserError, raise_if_signalled
from biskip_jax.inference import full_resolution, video
from biskip_jax.output_files import OutputFolder, file_kind

PROGRAM = "deblur"  # Names its record of outputs, .deblur_outputs.jsonl.
# The record of outputs written by earlier versions (a JSON list of names), still honoured.
_LEGACY_RECORD = ".deblur_outputs.json"
# Errors of the whole --out disk, not of one file: the run stops rather than fail every input.
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def output_folder(folder: str) -> OutputFolder:
  """The record of what ``deblur.py`` wrote into ``folder``."""
  return OutputFolder(folder, PROGRAM, legacy=_LEGACY_RECORD)


def _earlier_outputs(folder: str, cache: dict[str, set[str]]) -> set[str]:
  """Names that an earlier ``deblur.py`` wrote into ``folder`` (from its record)."""
  if folder not in cache:
    cache[folder] = set(output_folder(folder).entries)
  return cache[folder]


def _is_earlier_output(path: str, cache: dict[str, set[str]]) -> bool:
  real = os.path.realpath(path)
  return os.path.basename(real) in _earlier_outputs(os.path.dirname(real), cache)


def _not_regular(path: str, kind: str) -> str:
  return f"skipped {path}: {kind}, not a regular file"


def _walk(folder: str, out_dir: str | None, extensions: tuple[str, ...],
          cache: dict[str, set[str]]) -> tuple[list[str], int, list[str]]:
  """Files of ``folder`` (recursive, by extension), less earlier outputs and special files.

  Returns:
    ``(files, skipped, bad)``: the files to read, the number of earlier outputs skipped, and
    one message per name that is not a regular file (a FIFO, a device, a socket).
  """
  found, skipped, bad = [], 0, []
  for root, dirs, names in os.walk(folder):
    # Prune --out when it is a subfolder of the input (its files are earlier results).
    dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) != out_dir)
    for f in names:
      if f.lower().endswith(extensions):
        path = os.path.join(root, f)
        kind = file_kind(path)
        if kind is not None:
          bad.append(_not_regular(path, kind))
        elif _is_earlier_output(path, cache):
          skipped += 1
        else:
          found.append(path)
  return sorted(found, key=video.natural_key), skipped, sorted(bad)


def frame_files(folder: str) -> list[str]:
  """The image files of a folder of frames, in playing order (natural sort: 2 before 10)."""
  return _walk(folder, None, IMAGE_EXTENSIONS, {})[0]


def expand_inputs(inputs: Iterable[str], out_dir: str | None = None, *, videos: bool = False,
                  video_folders: bool = False) -> tuple[list[str], list[str]]:
  """Files, folders (recursive, image extensions) and globs -> (files, missing).

  Folders and globs skip the outputs of earlier runs: files recorded in their folder (see
  :func:`output_folder`), and a folder's walk skips ``out_dir`` when it is a subfolder. Files
  named explicitly are kept. ``videos``: folders' video files too. ``video_folders``: a
  folder is one item, a clip's frames. A FIFO, device or socket -- named, globbed or found in
  a folder -- is not opened: it is one message of ``missing``.
  """
  out_dir = os.path.realpath(out_dir) if out_dir else None
  files, missing = [], []
  cache: dict[str, set[str]] = {}
  for item in inputs:
    kind = file_kind(item)
    if kind == "a directory":
      with_videos = videos and not video_folders
      extensions = IMAGE_EXTENSIONS + (video.VIDEO_EXTENSIONS if with_videos else ())
      found, skipped, bad = _walk(item, out_dir, extensions, cache)
      missing.extend(bad)
      if found:
        files.extend([item] if video_folders else found)
      else:
        kind = "image or video" if with_videos else "image"
        missing.append(f"{item}: folder holds no {kind} files" + (
            f" other than {skipped} results of an earlier deblur run (name them as files to "
            "restore them again)" if skipped else ""))
    elif kind is not None:
      missing.append(_not_regular(item, kind))
    elif os.path.isfile(item):
      files.append(item)
    else:
      matches, bad = [], []
      for p in sorted(glob.glob(item, recursive=True)):
        kind = file_kind(p)
        if kind is not None and kind != "a directory":
          bad.append(_not_regular(p, kind))
        elif kind is None and not _is_earlier_output(p, cache):
          matches.append(p)
      files.extend(matches)
      missing.extend(bad)
      if not matches and not bad:
        missing.append(f"{item}: no such file, folder or matching glob")
  return list(dict.fromkeys(files)), missing


def _frame_count(path: str) -> int:
  """Frames (or pages) in an image file: > 1 for an animated GIF or a multi-page TIFF."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as img:
      return int(getattr(img, "n_frames", 1))
  except Exception:  # pylint: disable=broad-except  # load_image reports unreadable files.
    return 1


def _is_clip(path: str) -> bool:
  """A video file, or a folder of frames (restored into one clip)."""
  return os.path.isdir(path) or video.is_video(path)


def _output_name(path: str, fmt: str) -> str:
  """``OUT``-relative name of an input's result: its base name, ``.fmt`` (``.mp4`` for clips)."""
  if _is_clip(path):  # A folder of frames is named after the folder itself ("." too).
    return os.path.splitext(os.path.basename(os.path.realpath(path)))[0] + "." + (
        video.OUTPUT_FORMAT)
  return os.path.splitext(os.path.basename(path))[0] + "." + fmt


def plan_outputs(files: list[str], out_dir: str, fmt: str,
                 outputs: OutputFolder | None = None) -> list[str]:
  """The output path of each input; refuses one that would overwrite an input file.

  Images keep their base name with the extension of ``fmt``; videos and folders of frames
  become ``NAME.mp4``. A name taken by an earlier input of the list, or by a file in
  ``out_dir`` that ``deblur.py`` may not replace, becomes ``NAME_1``, ``NAME_2``, ...: one
  line on stderr says so.

  Raises:
    UserError: an output path is (or links to) one of the input files.
  """
  outputs = outputs or output_folder(out_dir)
  names = [_output_name(p, fmt) for p in files]
  inputs = {os.path.realpath(p): p for p in files}
  for name in names:
    clash = inputs.get(os.path.realpath(outputs.path(name)))
    if clash is not None:
      raise UserError(f"--out {out_dir}: the result for {clash} would overwrite that input; "
                      "choose an --out folder that holds no inputs")
  owners: dict[str, str] = {}  # Output name -> the input it is for.
  outs = []
  for path, name in zip(files, names):
    rel = outputs.free_name(name, owners.keys())
    owners[rel] = path
    if rel != name:
      why = (f"the result of {owners[name]}" if name in owners
             else f"{outputs.path(name)} {outputs.why_not(name)}")
      print(f"{cli.prog()}: {path} is written as {outputs.path(rel)} ({why})", file=sys.stderr)
    outs.append(outputs.path(rel))
  return outs


def run(ckpt: str | None, out_dir: str, inputs: list[str], fmt: str = "png",
        dtype: str = "float32", tile_size: int | None = None, video_folders: bool = False,
        fps: str = "25", ensemble: bool = False,
        tile_overlap: int | None = None) -> list[str]:
  """Deblurs all inputs into ``out_dir``; returns the failure messages (also printed).

  ``ckpt`` is a training run's path, or None / ``"pretrained[:NAME]"`` for the shipped model.
  Video files become restored MP4 clips (see :mod:`biskip_jax.inference.video`); with
  ``video_folders`` each folder input is a clip's frames, written as one MP4 at ``fps``.
  ``ensemble`` averages the restorations of the 8 flips/transposes (8x the compute);
  ``tile_size`` and ``tile_overlap`` override the model's ``config.eval`` (None: its own).

  Raises:
    UserError: nothing to deblur, a bad flag or checkpoint, an ``--out`` that cannot be
      created, or a disk that is full or read-only (the run stops there).
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  full_resolution.check_tiling(tile_size, tile_overlap)
  rate = video.parse_rate(fps)
  files, failures = expand_inputs(inputs, out_dir, videos=True, video_folders=video_folders)
  for msg in failures:
    print(f"{cli.prog()}: {msg}", file=sys.stderr)
  if not files:
    raise UserError("nothing to deblur: " + "; ".join(failures))
  if any(_is_clip(p) for p in files):
    video.import_av()  # A missing extra stops the run before the model loads.
  restore = full_resolution.Deblurrer.load(ckpt, dtype=dtype, ensemble=ensemble,
                                           tile_size=tile_size, tile_overlap=tile_overlap)
  outputs = output_folder(out_dir)
  outs = plan_outputs(files, out_dir, fmt, outputs)
  rels = [os.path.relpath(o, out_dir) for o in outs]
  # Recorded before any is written: a run stopped half-way still marks its results.
  outputs.record(rels)
  written = 0
  for path, rel in tqdm(list(zip(files, rels)), desc="deblur", unit="file",
                        disable=len(files) < 2):
    raise_if_signalled()
    try:
      with outputs.writing(rel) as out:
        if os.path.isdir(path):
          video.frames_to_video(frame_files(path), out, restore, rate)
        elif video.is_video(path):
          video.restore_video(path, out, restore)
        else:
          _restore_image(path, out, restore)
      written += 1
    except UserError as e:
      cause = e.__cause__
      if isinstance(cause, OSError) and cause.errno in _DISK_ERRORS:
        raise UserError(f"{e}: stopped after {written} of {len(files)} inputs") from cause
      msg = str(e) if isinstance(e, BadImageError) else f"{path}: {e}"
      failures.append(msg)
      tqdm.write(f"{cli.prog()}: skipped {msg}", file=sys.stderr)  # On a line of its own.
  # Counts outputs actually written (missing inputs are failures but not files).
  summary = f"{cli.prog()}: {written} of {len(files)} written to {out_dir}"
  if failures:
    summary += f"; {len(failures)} input(s) failed"
  print(summary, file=sys.stderr)
  return failures


def _restore_image(path: str, out: str, restore: video.Restore) -> None:
  image = load_image(path)
  frames = _frame_count(path)
  if frames > 1:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    tqdm.write(f"{cli.prog()}: warning: {path} holds {frames} frames (an animation or a "
               "multi-page file); only the first is restored", file=sys.stderr)
  save_image(out, restore(image))
