"""The work behind ``deblur.py``: expand inputs, restore each image, report bad files.

Inputs are never overwritten: an output path that is also an input file stops the run before
anything is written. Every output folder records the names it received in
``OUTPUT_MANIFEST``; folder and glob inputs skip the files listed there (and the ``--out``
folder itself), so running the same command again restores the same originals, not the
previous run's results.
"""

import functools
import glob
import json
import os
import sys
from typing import Iterable

from biskip_jax import cli, inference, video
from biskip_jax.errors import UserError, os_errors_as_user_errors
from biskip_jax.image_io import IMAGE_EXTENSIONS, BadImageError, load_image, save_image

OUTPUT_MANIFEST = ".deblur_outputs.json"


def _earlier_outputs(folder: str, cache: dict[str, set[str]]) -> set[str]:
  """Names that an earlier ``deblur.py`` wrote into ``folder`` (from its manifest)."""
  if folder not in cache:
    try:
      with open(os.path.join(folder, OUTPUT_MANIFEST)) as f:
        cache[folder] = set(json.load(f).get("outputs", []))
    except (OSError, ValueError, AttributeError):
      cache[folder] = set()
  return cache[folder]


def _is_earlier_output(path: str, cache: dict[str, set[str]]) -> bool:
  real = os.path.realpath(path)
  return os.path.basename(real) in _earlier_outputs(os.path.dirname(real), cache)


def _walk(folder: str, out_dir: str | None, extensions: tuple[str, ...],
          cache: dict[str, set[str]]) -> tuple[list[str], int]:
  """Files of ``folder`` (recursive, by extension), less earlier outputs -> (files, skipped)."""
  found, skipped = [], 0
  for root, dirs, names in os.walk(folder):
    # Prune --out when it is a subfolder of the input (its files are earlier results).
    dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) != out_dir)
    for f in names:
      if f.lower().endswith(extensions) and f != OUTPUT_MANIFEST:
        if _is_earlier_output(os.path.join(root, f), cache):
          skipped += 1
        else:
          found.append(os.path.join(root, f))
  return sorted(found, key=video.natural_key), skipped


def frame_files(folder: str) -> list[str]:
  """The image files of a folder of frames, in playing order (natural sort: 2 before 10)."""
  return _walk(folder, None, IMAGE_EXTENSIONS, {})[0]


def expand_inputs(inputs: Iterable[str], out_dir: str | None = None, *, videos: bool = False,
                  video_folders: bool = False) -> tuple[list[str], list[str]]:
  """Files, folders (recursive, image extensions) and globs -> (files, missing).

  Folders and globs skip the outputs of earlier runs: files listed in their folder's
  ``OUTPUT_MANIFEST``, and a folder's walk skips ``out_dir`` when it is a subfolder. Files
  named explicitly are kept. ``videos``: folders' video files too. ``video_folders``: a
  folder is one item, a clip's frames.
  """
  out_dir = os.path.realpath(out_dir) if out_dir else None
  files, missing = [], []
  cache: dict[str, set[str]] = {}
  for item in inputs:
    if os.path.isdir(item):
      with_videos = videos and not video_folders
      extensions = IMAGE_EXTENSIONS + (video.VIDEO_EXTENSIONS if with_videos else ())
      found, skipped = _walk(item, out_dir, extensions, cache)
      if found:
        files.extend([item] if video_folders else found)
      else:
        kind = "image or video" if with_videos else "image"
        missing.append(f"{item}: folder holds no {kind} files" + (
            f" other than {skipped} results of an earlier deblur run (name them as files to "
            "restore them again)" if skipped else ""))
    elif os.path.isfile(item):
      files.append(item)
    else:
      matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p)
                       and not _is_earlier_output(p, cache))
      if matches:
        files.extend(matches)
      else:
        missing.append(f"{item}: no such file, folder or matching glob")
  return list(dict.fromkeys(files)), missing


def _out_path(out_dir: str, path: str, fmt: str, taken: set) -> str:
  stem = os.path.splitext(os.path.basename(path))[0]
  candidate = os.path.join(out_dir, f"{stem}.{fmt}")
  k = 1
  while candidate in taken:  # Same base name from two folders: keep both.
    candidate = os.path.join(out_dir, f"{stem}_{k}.{fmt}")
    k += 1
  taken.add(candidate)
  return candidate


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


def plan_outputs(files: list[str], out_dir: str, fmt: str) -> list[str]:
  """The output path of each input; refuses one that would overwrite an input file.

  Images keep their base name with the extension of ``fmt``; videos and folders of frames
  become ``NAME.mp4``.

  Raises:
    UserError: an output path is (or links to) one of the input files.
  """
  taken: set = set()
  # A folder of frames is named after the folder itself (also for "." or "frames/").
  outs = [_out_path(out_dir, os.path.realpath(p), video.OUTPUT_FORMAT, taken) if _is_clip(p)
          else _out_path(out_dir, p, fmt, taken) for p in files]
  inputs = {os.path.realpath(p): p for p in files}
  for out in outs:
    clash = inputs.get(os.path.realpath(out))
    if clash is not None:
      raise UserError(f"--out {out_dir}: the result for {clash} would overwrite that input; "
                      "choose an --out folder that holds no inputs")
  return outs


def _record_outputs(out_dir: str, outs: list[str]) -> None:
  """Adds the names about to be written to ``out_dir`` to its manifest.

  Raises:
    UserError: ``out_dir`` cannot be written.
  """
  path = os.path.join(out_dir, OUTPUT_MANIFEST)
  names = _earlier_outputs(out_dir, {}) | {os.path.basename(o) for o in outs}
  with os_errors_as_user_errors(f"--out {out_dir}: cannot write to the folder"):
    with open(path + ".tmp", "w") as f:
      json.dump({"outputs": sorted(names)}, f, indent=0)
    os.replace(path + ".tmp", path)


def run(ckpt: str | None, out_dir: str, inputs: list[str], fmt: str = "png",
        dtype: str = "float32", tile_size: int | None = None, video_folders: bool = False,
        fps: str = "25", ensemble: bool = False) -> list[str]:
  """Deblurs all inputs into ``out_dir``; returns the failure messages (also printed).

  ``ckpt`` is a training run's path, or None / ``"pretrained[:NAME]"`` for the shipped model.
  Video files become restored MP4 clips (see :mod:`biskip_jax.video`); with
  ``video_folders`` each folder input is a clip's frames, written as one MP4 at ``fps``.
  ``ensemble`` averages the restorations of the 8 flips/transposes (8x the compute).
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  rate = video.parse_rate(fps)
  files, failures = expand_inputs(inputs, out_dir, videos=True, video_folders=video_folders)
  for msg in failures:
    print(f"{cli.prog()}: {msg}", file=sys.stderr)
  if not files:
    raise UserError("nothing to deblur: " + "; ".join(failures))
  if any(_is_clip(p) for p in files):
    video.import_av()  # A missing extra stops the run before the model loads.
  deblurrer = inference.Deblurrer.load(ckpt, dtype=dtype, ensemble=ensemble)
  restore = functools.partial(deblurrer, tile_size=tile_size)
  outs = plan_outputs(files, out_dir, fmt)
  with os_errors_as_user_errors(f"--out {out_dir}: cannot create the folder"):
    os.makedirs(out_dir, exist_ok=True)
  # Listed before any is written: a run stopped half-way still marks its results.
  _record_outputs(out_dir, outs)
  written = 0
  for path, out in tqdm(list(zip(files, outs)), desc="deblur", unit="file",
                        disable=len(files) < 2):
    try:
      if os.path.isdir(path):
        video.frames_to_video(frame_files(path), out, restore, rate)
      elif video.is_video(path):
        video.restore_video(path, out, restore)
      else:
        _restore_image(path, out, restore)
      written += 1
    except BadImageError as e:
      failures.append(str(e))
      print(f"{cli.prog()}: skipped {e}", file=sys.stderr)
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
    print(f"{cli.prog()}: warning: {path} holds {frames} frames (an animation or a multi-page "
          "file); only the first is restored", file=sys.stderr)
  with os_errors_as_user_errors(f"--out {os.path.dirname(out)}: cannot write {out}"):
    save_image(out, restore(image))
