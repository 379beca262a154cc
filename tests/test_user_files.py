"""A user's files: outputs never replace them, special files are never opened, and one bad input
never stops the others.

Each test builds its folders here: FIFOs (``os.mkfifo``), a UNIX socket, links, files of the
user's own under the names a program writes. Anything that could block (reading a FIFO) runs
in a thread with a deadline (:func:`_finishes`), so a regression fails instead of hanging.
"""

import errno
import hashlib
import json
import logging
import os
import socket
import threading

import numpy as np
import pytest
from PIL import features

from biskip_jax import cli, output_files
from biskip_jax.data.datasets import (
  BadImageError,
  folder,
  frames,
  load_image,
  save_image,
  synthetic,
)
from biskip_jax.errors import UserError
from biskip_jax.evaluation import eval_lib
from biskip_jax.inference import deblur_lib, full_resolution, loading
from tests.conftest import negative


def _image(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _finishes(fn, fifos=(), seconds=60):
  """``fn()`` run in a thread; fails the test if it is still blocked after ``seconds``.

  A blocked reader is then released by opening each FIFO for writing (and closing it).
  """
  result = {}

  def target():
    try:
      result["value"] = fn()
    except BaseException as e:  # pylint: disable=broad-except  # Re-raised in the test.
      result["error"] = e

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    for fifo in fifos:
      try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
      except OSError:
        pass
    thread.join(10)
    pytest.fail(f"blocked for {seconds} s: a FIFO was opened for reading")
  if "error" in result:
    raise result["error"]
  return result.get("value")


def _lines(err: str, start: str) -> list[str]:
  """The lines of ``err`` that start with ``start``, as a terminal shows them (a progress bar
  redrawn with carriage returns is overwritten)."""
  shown = [line.split("\r")[-1] for line in err.split("\n")]
  return [line for line in shown if line.startswith(start)]


# deblur.py: outputs --------------------------------------------------------------------------


def test_deblur_replaces_only_its_own_results(negative_model, tmp_path, capsys):
  del negative_model
  inputs, more, out = tmp_path / "in", tmp_path / "more", tmp_path / "out"
  for name, seed in (("a.png", 1), ("b.png", 2), ("c.png", 3)):
    save_image(inputs / name, _image(seed))
  save_image(more / "c.bmp", _image(4))  # The same stem as in/c.png.
  out.mkdir()
  (out / "a.png").write_bytes(b"the user's own a.png")
  outside = tmp_path / "elsewhere.png"
  outside.write_bytes(b"a file outside --out")
  os.symlink(outside, out / "b.png")
  cmd = [str(inputs), str(more / "c.bmp")]

  assert deblur_lib.run(None, str(out), cmd) == []
  err = capsys.readouterr().err
  assert (out / "a.png").read_bytes() == b"the user's own a.png"
  assert outside.read_bytes() == b"a file outside --out"
  assert os.readlink(out / "b.png") == str(outside)
  expected = {"a_1.png": 1, "b_1.png": 2, "c.png": 3, "c_1.png": 4}
  for name, seed in expected.items():
    np.testing.assert_array_equal(load_image(out / name), negative(_image(seed)))
  prog = cli.prog()  # The program's name: deblur.py, biskip-deblur, here pytest's.
  notes = _lines(err, f"{prog}: ")
  assert f"{prog}: {inputs / 'a.png'} is written as {out / 'a_1.png'} ({out / 'a.png'} " \
         "exists and was not written by a deblur run)" in notes, err
  assert f"{prog}: {inputs / 'b.png'} is written as {out / 'b_1.png'} ({out / 'b.png'} is " \
         "a link)" in notes, err
  assert f"{prog}: {more / 'c.bmp'} is written as {out / 'c_1.png'} (the result of " \
         f"{inputs / 'c.png'})" in notes, err
  assert len(notes) == 4, notes  # The three renames and the summary.

  # The same command again replaces its own results, under the same names, and nothing else.
  listing = sorted(os.listdir(out))
  assert deblur_lib.run(None, str(out), cmd) == []
  assert sorted(os.listdir(out)) == listing
  assert (out / "a.png").read_bytes() == b"the user's own a.png"
  assert outside.read_bytes() == b"a file outside --out"
  for name, seed in expected.items():
    np.testing.assert_array_equal(load_image(out / name), negative(_image(seed)))

  # A result the user edited since is theirs now: kept, and named in the line.
  (out / "c.png").write_bytes(b"retouched by hand")
  capsys.readouterr()
  assert deblur_lib.run(None, str(out), cmd) == []
  assert (out / "c.png").read_bytes() == b"retouched by hand"
  assert f"({out / 'c.png'} was written by a deblur run but changed since)" in (
      capsys.readouterr().err)


def test_an_older_record_of_results_is_honoured(negative_model, tmp_path, capsys):
  del negative_model
  save_image(tmp_path / "in" / "a.png", _image(1))
  out = tmp_path / "out"
  out.mkdir()
  (out / "a.png").write_bytes(b"an earlier result")
  (out / ".deblur_outputs.json").write_text(json.dumps({"outputs": ["a.png"]}))
  assert deblur_lib.run(None, str(out), [str(tmp_path / "in")]) == []
  np.testing.assert_array_equal(load_image(out / "a.png"), negative(_image(1)))
  assert "is written as" not in capsys.readouterr().err


def test_atomic_write_replaces_a_link_and_keeps_the_file_on_failure(tmp_path):
  target = tmp_path / "target.txt"
  target.write_text("theirs")
  os.symlink(target, tmp_path / "out.txt")
  with output_files.atomic_write(tmp_path / "out.txt", "w") as f:
    f.write("ours")
  assert target.read_text() == "theirs" and not os.path.islink(tmp_path / "out.txt")
  assert (tmp_path / "out.txt").read_text() == "ours"

  class Stop(BaseException):
    pass

  for error in (OSError(errno.ENOSPC, "No space left on device"), Stop()):
    with pytest.raises(type(error)):
      with output_files.atomic_write(tmp_path / "out.txt", "w") as f:
        f.write("half")
        raise error
    assert (tmp_path / "out.txt").read_text() == "ours"
    assert sorted(os.listdir(tmp_path)) == ["out.txt", "target.txt"]  # No temporary file.
  long_name = "n" * 250 + ".txt"  # 254 bytes: the temporary file's name must still fit.
  with output_files.atomic_write(tmp_path / long_name, "w") as f:
    f.write("long")
  assert (tmp_path / long_name).read_text() == "long"
  assert oct(os.stat(tmp_path / long_name).st_mode & 0o777) == oct(
      output_files._file_mode())  # pylint: disable=protected-access  # As open() would.


def test_sha256_of_bytes_and_of_a_file_read_in_blocks(tmp_path):
  data = np.random.default_rng(0).integers(0, 256, 3 * (1 << 20) + 5, np.uint8).tobytes()
  (tmp_path / "f.bin").write_bytes(data)
  expected = hashlib.sha256(data).hexdigest()  # The standard library on the whole bytes.
  assert output_files.sha256(data) == output_files.sha256(tmp_path / "f.bin") == expected
  assert output_files.sha256(b"") == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b"
                                      "7852b855")  # FIPS 180-2's digest of the empty message.


def test_a_record_line_cut_short_marks_nothing(tmp_path):
  (tmp_path / "a.png").write_bytes(b"x")
  (tmp_path / "b.png").write_bytes(b"y")
  (tmp_path / ".deblur_outputs.jsonl").write_text('{"name": "a.png"}\n{"name": "b.p')
  outputs = deblur_lib.output_folder(str(tmp_path))
  assert outputs.why_not("a.png") is None  # Recorded, unfinished: a run stopped while writing.
  assert outputs.why_not("b.png") == "exists and was not written by a deblur run"
  assert outputs.free_name("b.png", set()) == "b_1.png"


# deblur.py: special files and bad inputs -----------------------------------------------------


def test_deblur_skips_fifos_sockets_and_devices_unopened(negative_model, tmp_path, capsys):
  del negative_model
  inputs, out = tmp_path / "in", tmp_path / "out"
  save_image(inputs / "a.png", _image(1))
  save_image(inputs / "z.png", _image(2))
  os.mkfifo(inputs / "f.png")
  os.mkfifo(tmp_path / "named.jpg")
  os.mkfifo(tmp_path / "globbed.png")
  sock = socket.socket(socket.AF_UNIX)
  try:
    sock.bind(str(inputs / "s.png"))
  except OSError as e:  # A path too long for a socket address.
    pytest.skip(f"cannot make a UNIX socket here ({e})")
  devices = [d for d in ("/dev/zero",) if os.path.exists(d)]
  fifos = [inputs / "f.png", tmp_path / "named.jpg", tmp_path / "globbed.png"]
  try:
    failures = _finishes(lambda: deblur_lib.run(
        None, str(out), [str(inputs), str(tmp_path / "named.jpg"), str(tmp_path / "glob*.png"),
                         *devices]), fifos)
    with pytest.raises(BadImageError, match="it is a FIFO, not a regular file"):
      _finishes(lambda: load_image(tmp_path / "named.jpg"), fifos)
  finally:
    sock.close()
  expected = [f"skipped {inputs / 'f.png'}: a FIFO, not a regular file",
              f"skipped {inputs / 's.png'}: a socket, not a regular file",
              f"skipped {tmp_path / 'named.jpg'}: a FIFO, not a regular file",
              f"skipped {tmp_path / 'globbed.png'}: a FIFO, not a regular file"]
  expected += [f"skipped {d}: a character device, not a regular file" for d in devices]
  assert failures == expected
  err = capsys.readouterr().err
  for line in expected:
    assert err.count(line) == 1, (line, err)
  assert sorted(os.listdir(out)) == [".deblur_outputs.jsonl", "a.png", "z.png"]


@pytest.mark.skipif(not features.check("webp"), reason="Pillow without WebP")
def test_an_output_name_that_cannot_be_written_does_not_stop_the_rest(negative_model, tmp_path,
                                                                      capsys):
  del negative_model
  inputs, out = tmp_path / "in", tmp_path / "out"
  long_stem = "x" * 251  # x...x.png is 255 bytes; its result x...x.webp would be 256.
  for i, stem in enumerate(("a", long_stem, "z")):
    save_image(inputs / f"{stem}.png", _image(i))
  failures = deblur_lib.run(None, str(out), [str(inputs)], fmt="webp")
  assert len(failures) == 1 and failures[0].startswith(
      f"{inputs / long_stem}.png: --out {out}: cannot write {out / long_stem}.webp ("), failures
  assert failures[0].endswith("(File name too long)"), failures
  assert sorted(os.listdir(out)) == [".deblur_outputs.jsonl", "a.webp", "z.webp"]
  err = capsys.readouterr().err
  prog = cli.prog()
  assert _lines(err, f"{prog}: skipped ") == [f"{prog}: skipped {failures[0]}"], err
  assert "2 of 3 written" in err and "Traceback" not in err


def test_a_full_disk_stops_deblur_with_one_line(negative_model, tmp_path, monkeypatch):
  del negative_model
  for name in ("a.png", "b.png", "c.png"):
    save_image(tmp_path / "in" / name, _image(1))
  writes = []

  def fills_up(path, image):
    writes.append(path)
    if len(writes) > 1:
      raise OSError(errno.ENOSPC, "No space left on device")
    save_image(path, image)

  monkeypatch.setattr(deblur_lib, "save_image", fills_up)
  out = tmp_path / "out"
  with pytest.raises(UserError) as e:
    deblur_lib.run(None, str(out), [str(tmp_path / "in")])
  assert str(e.value) == (f"--out {out}: cannot write {out / 'b.png'} (No space left on "
                          "device): stopped after 1 of 3 inputs")
  assert len(writes) == 2  # c.png is not tried on a full disk.
  assert sorted(os.listdir(out)) == [".deblur_outputs.jsonl", "a.png"]


def test_a_negative_tile_size_is_refused_before_the_model_loads(tmp_path, monkeypatch):
  save_image(tmp_path / "a.png", _image(1))
  monkeypatch.setattr(full_resolution.Deblurrer, "load", lambda *a, **k: pytest.fail("loaded"))
  with pytest.raises(UserError, match=r"^--tile_size=-5: expected 0 \(automatic\) or a positive"):
    deblur_lib.run(None, str(tmp_path / "out"), [str(tmp_path / "a.png")], tile_size=-5)


# evaluate.py -----------------------------------------------------------------------------------


def test_evaluate_replaces_its_own_outputs_and_no_others(tmp_path):
  out = tmp_path / "eval"
  examples = [{"name": "p.png", "blur": _image(1), "sharp": _image(2)}]
  evaluate = lambda: eval_lib.evaluate(negative, examples, str(out), saliency=False,
                                       progress=False)
  first = evaluate()
  second = evaluate()  # A re-run into the same --out replaces its own files.
  assert first["psnr"] == second["psnr"]
  np.testing.assert_array_equal(load_image(out / "restored" / "p.png"), negative(_image(1)))

  outside = tmp_path / "elsewhere.png"
  outside.write_bytes(b"a file outside --out")
  os.remove(out / "restored" / "p.png")
  os.symlink(outside, out / "restored" / "p.png")
  with pytest.raises(UserError, match=rf"^--out {out}: {out}/restored/p.png is a link; "):
    evaluate()
  assert outside.read_bytes() == b"a file outside --out"

  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "metrics.json").write_text("{}")
  # Refused before the checkpoint is even looked at (it does not exist).
  with pytest.raises(UserError) as e:
    eval_lib.run(str(tmp_path / "no_such_run"), "synthetic", str(mine))
  assert str(e.value).startswith(f"--out {mine}: {mine}/metrics.json exists and was not written "
                                 "by an evaluate run; "), e.value
  assert os.listdir(mine) == ["metrics.json"]


# Reading: datasets, training data, checkpoints --------------------------------------------------


def test_dataset_listings_skip_special_files_with_one_line(tmp_path, caplog):
  pairs = tmp_path / "pairs"
  for sub in ("blur", "sharp"):
    save_image(pairs / sub / "p2.png", _image(2))
  save_image(pairs / "sharp" / "p1.png", _image(1))
  os.mkfifo(pairs / "blur" / "p1.png")
  (pairs / "blur" / "dir.png").mkdir()  # A folder named like an image: walked, not read.
  photos = tmp_path / "photos"
  for name in ("a.png", "b.png"):
    save_image(photos / name, _image(3))
  os.mkfifo(photos / "f.png")
  clip = tmp_path / "clip"
  for i in range(3):
    save_image(clip / f"{i}.png", _image(i))
  os.mkfifo(clip / "9.png")
  fifos = [pairs / "blur" / "p1.png", photos / "f.png", clip / "9.png"]
  caplog.set_level(logging.WARNING, logger="biskip_jax")
  with pytest.warns(folder.UnpairedWarning, match="sharp/p1.png"):
    listed = _finishes(lambda: folder.list_pairs(str(pairs)), fifos)
  assert [p.name for p in listed] == ["p2.png"]
  specs = _finishes(lambda: synthetic.image_specs(str(photos), (), "train"), fifos)
  assert [os.path.basename(s) for s in specs] == ["a.png", "b.png"]
  seqs = _finishes(lambda: frames.list_sequences(str(clip)), fifos)
  assert [[os.path.basename(f) for f in s] for s in seqs] == [["0.png", "1.png", "2.png"]]
  skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
  assert skipped == [f"skipped {f}: a FIFO, not a regular file" for f in fifos], skipped


def test_a_fifo_for_config_json_is_one_line(tmp_path):
  os.mkfifo(tmp_path / "config.json")
  with pytest.raises(UserError, match=r"config.json is a FIFO, not a regular file"):
    _finishes(lambda: loading.load_run_config(str(tmp_path)), [tmp_path / "config.json"])


def test_the_record_stays_one_line_per_file_over_many_runs(tmp_path):
  for run in range(200):
    outputs = deblur_lib.output_folder(str(tmp_path))  # As a new run reads it.
    with outputs.writing("a.png") as path:
      save_image(path, _image(run))
  lines = (tmp_path / ".deblur_outputs.jsonl").read_text().splitlines()
  assert len(lines) <= 2 + 100 + 2, len(lines)
  last = json.loads(lines[-1])
  st = os.stat(tmp_path / "a.png")
  assert last == {"name": "a.png", "file": [st.st_size, st.st_mtime_ns]}
  assert deblur_lib.output_folder(str(tmp_path)).why_not("a.png") is None
