"""Tests for video in ``deblur.py``: clips made here with PyAV, read back with PyAV."""

import contextlib
import fractions
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import skimage.data
import skimage.transform

from biskip_jax.data.datasets import BadImageError, save_image
from biskip_jax.errors import Stopped, UserError
from biskip_jax.inference import deblur_lib, full_resolution, video

av = pytest.importorskip("av", reason="the video extra (PyAV) is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = (skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea)


def _frames(n: int, width: int, height: int) -> list[np.ndarray]:
  """``n`` different photos at ``width`` x ``height``, uint8 RGB."""
  out = []
  for i in range(n):
    photo = PHOTOS[i % len(PHOTOS)]()
    small = skimage.transform.resize(photo, (height, width), anti_aliasing=True)
    out.append(np.roll((small * 255).round().astype(np.uint8), 3 * i, axis=1))
  return out


def _make_clip(path, frames, rate, audio_seconds=0.0):
  """Writes ``frames`` as an H.264 MP4 at ``rate`` (plus an AAC tone if ``audio_seconds``)."""
  with av.open(str(path), mode="w") as c:
    v = c.add_stream("libx264", rate=rate)
    v.height, v.width = frames[0].shape[:2]
    v.pix_fmt = "yuv444p" if v.width % 2 or v.height % 2 else "yuv420p"
    v.options = {"crf": "10"}
    a = c.add_stream("aac", rate=48000) if audio_seconds else None
    if a is not None:
      a.layout = "mono"
      t = np.arange(int(48000 * audio_seconds)) / 48000
      tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
      frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
      frame.sample_rate = 48000
      c.mux(a.encode(frame))
      c.mux(a.encode(None))
    for i, img in enumerate(frames):
      f = av.VideoFrame.from_ndarray(img, format="rgb24")
      f.pts = i
      f.time_base = 1 / fractions.Fraction(rate)
      c.mux(v.encode(f))
    c.mux(v.encode(None))


def _read_clip(path):
  """(frame rate, (width, height), RGB frames, audio codec or None) as PyAV decodes them."""
  with av.open(str(path)) as c:
    s = c.streams.video[0]
    rate, size = s.average_rate, (s.codec_context.width, s.codec_context.height)  # Before decoding.
    audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
    return rate, size, [f.to_ndarray(format="rgb24") for f in c.decode(s)], audio


@pytest.mark.parametrize("rate, width, height, audio", [
    (fractions.Fraction(30000, 1001), 64, 48, 1.0),  # NTSC rate, AAC audio kept.
    (fractions.Fraction(15), 33, 25, 0.0),  # Odd size: YUV 4:4:4.
])
def test_restore_video_keeps_rate_size_frames_and_audio(negative_model, tmp_path, rate, width,
                                                        height, audio):
  clip, out = tmp_path / "clip.mp4", tmp_path / "out.mp4"
  _make_clip(clip, _frames(6, width, height), rate, audio)
  _, _, decoded, _ = _read_clip(clip)
  assert video.restore_video(str(clip), str(out), negative_model) == 6
  got_rate, size, frames, codec = _read_clip(out)
  assert got_rate == rate and size == (width, height) and len(frames) == 6
  assert codec == ("aac" if audio else None)
  # Each frame restored, in order, up to H.264's loss (these tiny detailed frames lose about
  # 4 to 6 levels of 255 at CRF 17, mostly to 4:2:0 chroma; a wrong frame is 30 to 100 off).
  errors = [np.abs(res - negative_model(inp).astype(int)).mean()
            for inp, res in zip(decoded, frames)]
  assert max(errors) < 8, errors
  assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "out.mp4"]  # No partial file left.


def test_deblur_run_writes_clips_and_reports_bad_videos(negative_model, tmp_path, capsys):
  inputs = tmp_path / "in"
  frames_dir = inputs / "shots"
  frames = _frames(11, 40, 32)  # frame_2 before frame_10: natural order.
  for i, img in enumerate(frames):
    save_image(frames_dir / f"frame_{i}.png", img)
  _make_clip(inputs / "clip.mov", frames[:4], 24)
  (inputs / "bad.mp4").write_bytes(os.urandom(2000))
  (inputs / "cut.mp4").write_bytes((inputs / "clip.mov").read_bytes()[:1500])
  out = tmp_path / "out"
  failures = deblur_lib.run(None, str(out), [str(frames_dir), str(inputs / "*.m*")],
                            video_folders=True, fps="12")
  assert sorted(os.listdir(out)) == [".deblur_outputs.jsonl", "clip.mp4", "shots.mp4"]
  rate, size, restored, _ = _read_clip(out / "shots.mp4")
  assert (rate, size, len(restored)) == (12, (40, 32), 11)
  order = [np.abs(restored[k].astype(int) - negative_model(frames[i])).mean()
           for k, i in ((2, 2), (2, 10), (10, 10))]
  assert order[0] < 8 and order[1] > 20 and order[2] < 8, order
  assert _read_clip(out / "clip.mp4")[:2] == (24, (40, 32))
  assert len(failures) == 2 and all("not a readable video" in f for f in failures), failures
  err = capsys.readouterr().err
  assert "skipped" in err and "Traceback" not in err
  # A frame of another size fails its clip, and leaves no partial file.
  save_image(frames_dir / "frame_99.png", frames[0][:30])
  with pytest.raises(BadImageError, match="frame_99.png: frame of 40x30 pixels"):
    video.frames_to_video(deblur_lib.frame_files(str(frames_dir)), str(out / "x.mp4"),
                          negative_model)
  assert not [n for n in os.listdir(out) if n.startswith((".x", "x"))]


def test_missing_extra_and_bad_rate_are_one_line(monkeypatch, tmp_path):
  with pytest.raises(UserError, match="--fps 0: expected a frame rate"):
    video.parse_rate("0")
  assert video.parse_rate("30000/1001") == fractions.Fraction(30000, 1001)
  monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError.
  clip = tmp_path / "clip.mp4"
  clip.write_bytes(b"x")
  monkeypatch.setattr(full_resolution.Deblurrer, "load", lambda *a, **k: pytest.fail("loaded"))
  with pytest.raises(UserError, match=r'pip install -e "\.\[video\]"'):
    deblur_lib.run(None, str(tmp_path / "out"), [str(clip)])


@pytest.mark.slow
def test_deblur_py_video_round_trip_and_corrupt_file(workdir, tmp_path):
  path, _, _ = workdir
  _make_clip(tmp_path / "clip.mp4", _frames(5, 48, 32), 25, audio_seconds=0.2)
  (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(500))
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "deblur.py"), f"--ckpt={path}", f"--out={out}",
       str(tmp_path / "clip.mp4"), str(tmp_path / "broken.mp4")],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 1, proc.stderr
  assert "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if "broken.mp4" in l]
  assert len(lines) == 1 and "not a readable video" in lines[0], proc.stderr
  rate, size, frames, audio = _read_clip(out / "clip.mp4")
  assert (rate, size, len(frames), audio) == (25, (48, 32), 5, "aac")


def test_a_folder_of_frames_is_named_after_the_folder(tmp_path, monkeypatch):
  (tmp_path / "shots").mkdir()
  monkeypatch.chdir(tmp_path / "shots")
  out = str(tmp_path / "out")
  assert deblur_lib.plan_outputs([".", "../shots/", "clip.MOV", "a.jpg"], out, "png") == [
      os.path.join(out, n) for n in ("shots.mp4", "shots_1.mp4", "clip.mp4", "a.png")]


def _fast_start_clip(path, n=30, width=64, height=48):
  """An H.264 MP4 of ``n`` noise frames with its index (moov) first, as phones and web
  encoders write them: cut short, it still opens and decodes up to the cut."""
  rng = np.random.default_rng(0)
  with av.open(str(path), mode="w", options={"movflags": "faststart"}) as c:
    v = c.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = width, height, "yuv420p"
    for _ in range(n):
      frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), np.uint8),
                                         format="rgb24")
      c.mux(v.encode(frame))
    c.mux(v.encode(None))
  return path.read_bytes()


def test_a_cut_or_damaged_clip_is_one_line_and_the_rest_is_restored(negative_model, tmp_path,
                                                                    capsys):
  data = _fast_start_clip(tmp_path / "whole.mp4")
  mdat = data.index(b"mdat")
  assert mdat < len(data) // 10  # The index comes first: the cut below is in the frames.
  inputs = tmp_path / "in"
  inputs.mkdir()
  (inputs / "a_cut.mp4").write_bytes(data[:len(data) * 6 // 10])
  with pytest.raises(BadImageError, match=r"a_cut.mp4: damaged video \(only \d+ of its 30 "):
    video.restore_video(str(inputs / "a_cut.mp4"), str(tmp_path / "x.mp4"), negative_model)
  # Garbage over frames: FFmpeg conceals some damage, and reports the rest while decoding.
  raised = 0
  for k, at in enumerate((0.6, 0.7, 0.8, 0.9)):
    damaged = bytearray(data)
    start = mdat + int((len(data) - mdat) * at)
    damaged[start:start + 400] = np.random.default_rng(k).bytes(400)
    (tmp_path / "damaged.mp4").write_bytes(bytes(damaged))
    try:
      assert video.restore_video(str(tmp_path / "damaged.mp4"), str(tmp_path / "x.mp4"),
                                 negative_model) == 30
    except BadImageError as e:  # Any other exception fails the test.
      assert "damaged.mp4: damaged video (" in str(e)
      raised += 1
  assert raised, "no damage was reported: the test no longer reaches decoding errors"
  save_image(inputs / "b.png", _frames(1, 40, 32)[0])
  failures = deblur_lib.run(None, str(tmp_path / "out"), [str(inputs)])
  assert len(failures) == 1 and "a_cut.mp4: damaged video" in failures[0], failures
  assert sorted(os.listdir(tmp_path / "out")) == [".deblur_outputs.jsonl", "b.png"]
  assert "Traceback" not in capsys.readouterr().err
  assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]


class _SignalsOnWrite:
  """A file that counts its writes and receives SIGTERM inside the ``n``-th (from PyAV's
  write callback; ``n`` 0: never)."""

  def __init__(self, f, n: int):
    self._f, self._n, self.writes = f, n, 0

  def write(self, data):
    self.writes += 1
    if self.writes == self._n:
      signal.raise_signal(signal.SIGTERM)  # Its handler runs before this returns.
    return self._f.write(data)

  def __getattr__(self, name):
    return getattr(self._f, name)


@pytest.mark.parametrize("nth_write", ["first", "third", "last"])
def test_a_signal_while_pyav_writes_stops_the_clip(stop_on_signals, monkeypatch, tmp_path,
                                                    nth_write):
  """PyAV drops a ``Stopped`` raised in its write callback: the stop must not be lost, nor
  a clip whose last write (the MP4's index, as the file closes) it broke be kept."""
  clip = tmp_path / "in" / "in.mp4"
  clip.parent.mkdir()
  _make_clip(clip, _frames(3, 64, 48) * 50, 25)  # Past x264's lookahead.
  atomic_write, files = video.atomic_write, []

  @contextlib.contextmanager
  def signalling_write(path, n):
    with atomic_write(path) as f:
      files.append(_SignalsOnWrite(f, n))
      yield files[-1]

  monkeypatch.setattr(video, "atomic_write", lambda path: signalling_write(path, 0))
  video.restore_video(str(clip), str(tmp_path / "counted.mp4"), lambda image: image)
  os.remove(tmp_path / "counted.mp4")
  n = {"first": 1, "third": 3, "last": files[0].writes}[nth_write]
  assert files[0].writes > 3
  monkeypatch.setattr(video, "atomic_write", lambda path: signalling_write(path, n))
  frames = []
  with pytest.raises(Stopped) as e:
    video.restore_video(str(clip), str(tmp_path / "out.mp4"),
                        lambda image: frames.append(image) or image)
  assert e.value.signum == signal.SIGTERM
  if nth_write != "last":
    assert len(frames) < 150  # Stopped within the clip, not after it.
  assert os.listdir(tmp_path) == ["in"]  # No clip, no hidden partial file.


class _SignalsWhenCollected:
  def __del__(self):  # Python prints what a __del__ raises as ignored, and goes on.
    signal.raise_signal(signal.SIGTERM)


def test_a_stop_dropped_while_restoring_a_frame_stops_the_clip_before_the_next(
    stop_on_signals, tmp_path, capsys):
  """As when the signal's handler runs in JAX's garbage-collection callback."""
  _make_clip(tmp_path / "in.mp4", _frames(3, 64, 48) * 3, 25)
  frames = []

  def restore(image):
    frames.append(image)
    if len(frames) == 5:
      _SignalsWhenCollected()
    return image

  with pytest.raises(Stopped):
    video.restore_video(str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4"), restore)
  assert len(frames) == 5
  assert os.listdir(tmp_path) == ["in.mp4"]
  assert "Stopped" not in capsys.readouterr().err  # Not printed as an ignored exception.


@pytest.mark.slow
def test_sigterm_during_a_clip_leaves_no_partial_file(workdir, tmp_path):
  path, _, _ = workdir
  frames = _frames(3, 64, 48)
  _make_clip(tmp_path / "long.mp4", [frames[i % 3] for i in range(1500)], 25)
  out = tmp_path / "out"
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "deblur.py"), f"--ckpt={path}", f"--out={out}",
       str(tmp_path / "long.mp4")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT})
  try:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
      if os.path.isdir(out) and any(n.endswith(".partial") for n in os.listdir(out)):
        break
      time.sleep(0.01)
    assert proc.poll() is None, "deblur.py ended before the clip was half-written"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 143, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  assert err.strip().splitlines()[-1].split("\r")[-1] == (
      "deblur.py: stopped by signal 15; the files written so far are complete"), err[-3000:]
  assert os.listdir(out) == [".deblur_outputs.jsonl"]  # No clip, no hidden partial file.
