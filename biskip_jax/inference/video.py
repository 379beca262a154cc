"""Video in and out for ``deblur.py``: restore a clip frame by frame, keeping its timing.

Needs the optional extra ``video`` (PyAV, whose wheel ships FFmpeg): ``pip install -e
".[video]"``. Frames are streamed: one decoded frame, its restored copy and the encoder's few
frames of look-ahead are in memory at a time, whatever the clip's length.

The result is an H.264 MP4 (``libx264``, CRF 17: visually lossless) with the input's size, frame
count and timestamps, hence its frame rate (variable rates too). The first audio track is
kept, copied without re-encoding, when MP4 can hold its codec (AAC, MP3, AC-3, Opus, FLAC,
ALAC); other audio is dropped with a warning, as are subtitles and further audio tracks.
Odd-sized clips are encoded as YUV 4:4:4 (4:2:0 needs even sizes), which some players lack.
"""

import contextlib
import fractions
import os
import re
import sys
from typing import Callable, Iterator, Sequence

import numpy as np

from biskip_jax.data.image_io import BadImageError, load_image
from biskip_jax.errors import UserError, os_errors_as_user_errors, raise_if_signalled, signals_held
from biskip_jax.output_files import atomic_write

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".ogv")
OUTPUT_FORMAT = "mp4"
# Audio codecs that the MP4 muxer takes as they are (copied, not re-encoded).
_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
_CRF = "17"
_DEFAULT_RATE = fractions.Fraction(25)

Restore = Callable[[np.ndarray], np.ndarray]  # uint8 [H, W, 3] -> uint8 [H, W, 3].


def is_video(path: str) -> bool:
  """Whether ``path`` names a video file (by its extension)."""
  return path.lower().endswith(VIDEO_EXTENSIONS)


def import_av():
  """PyAV, or a one-line :class:`UserError` naming the extra that installs it."""
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError("videos need the optional PyAV package: pip install -e \".[video]\" "
                    "(or pip install av)") from e
  return av


def parse_rate(text: str) -> fractions.Fraction:
  """``"25"``, ``"29.97"`` or ``"30000/1001"`` -> a positive frame rate.

  Raises:
    UserError: not a positive number.
  """
  try:
    rate = fractions.Fraction(text)
  except (ValueError, ZeroDivisionError):
    rate = fractions.Fraction(0)
  if rate <= 0 or rate > 1000:
    raise UserError(f"--fps {text}: expected a frame rate in (0, 1000], e.g. 25, 29.97 "
                    "or 30000/1001")
  return rate


def natural_key(path: str) -> list:
  """Sort key putting ``frame2.png`` before ``frame10.png``."""
  return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path)]


def _progress(total: int | None, desc: str):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total or None, desc=desc, unit="frame", leave=False, file=sys.stderr)


@contextlib.contextmanager
def _output(av, out: str) -> Iterator:
  """An MP4 container written to a hidden temporary file, renamed to ``out`` on success.

  Raises:
    UserError: ``out`` cannot be written (its ``__cause__`` is the ``OSError``).
  """
  with os_errors_as_user_errors(f"cannot write {out}"), atomic_write(out) as f:
    with signals_held():  # PyAV writes through f: see _mux.
      container = av.open(f, mode="w", format=OUTPUT_FORMAT)
    try:
      yield container
    except BaseException:
      with contextlib.suppress(Exception), signals_held():
        container.close()
      raise
    with signals_held():
      container.close()


def _mux(container, packets) -> None:
  """``container.mux(packets)``; a stopping signal meanwhile raises once PyAV has returned.

  PyAV writes the packets through the output's Python file object and drops any exception
  but ``Exception`` raised there, failing the write (see :func:`signals_held`).
  """
  with signals_held():
    container.mux(packets)


def _video_stream(container, width: int, height: int, rate: fractions.Fraction,
                  time_base: fractions.Fraction):
  stream = container.add_stream("libx264", rate=rate)
  stream.width, stream.height = width, height
  stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
  stream.options = {"crf": _CRF}
  stream.codec_context.time_base = time_base
  return stream


def _encode(container, stream, image: np.ndarray | None, pts: int | None = None) -> None:
  """Encodes one RGB frame at ``pts`` (``None``: flushes the encoder) and muxes its packets."""
  frame = None
  if image is not None:
    frame = import_av().VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame.pts, frame.time_base = pts, stream.codec_context.time_base
  _mux(container, stream.encode(frame))  # An OSError is reported by _output, naming the file.


def _check(image: np.ndarray, restored: np.ndarray) -> np.ndarray:
  if restored.shape != image.shape or restored.dtype != np.uint8:
    raise ValueError(f"restore returned {restored.dtype} {restored.shape} for {image.shape}")
  return restored


def restore_video(path: str, out: str, restore: Restore) -> int:
  """Writes ``restore`` applied to every frame of the video ``path`` to the MP4 ``out``.

  Args:
    path: a video FFmpeg reads (its first video stream is restored).
    out: the output ``.mp4``; written only when the whole clip succeeded.
    restore: uint8 [H, W, 3] RGB -> uint8 [H, W, 3] RGB.

  Returns:
    The number of frames written (the input's).

  Raises:
    BadImageError: ``path`` is not a readable video, or is damaged part-way.
    UserError: PyAV is missing, or ``out`` cannot be written.
  """
  av = import_av()
  try:
    source = av.open(path)
  except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise BadImageError(f"{path}: not a readable video ({_reason(e)})") from e
  with source:
    if not source.streams.video:
      raise BadImageError(f"{path}: holds no video stream")
    video = source.streams.video[0]
    video.thread_type = "AUTO"
    audio = source.streams.audio[0] if source.streams.audio else None
    rate = video.average_rate or video.guessed_rate or _DEFAULT_RATE
    if audio is not None and audio.codec_context.name not in _MP4_AUDIO:
      print(f"warning: {path}: its {audio.codec_context.name} audio is dropped (MP4 cannot "
            "hold it without re-encoding)", file=sys.stderr)
      audio = None
    # Timestamps as decoded, in the input's time base; frames without any get 1/rate steps.
    base = video.time_base or 1 / rate
    step = round(1 / (rate * base)) or 1
    count = 0
    # The progress bar exists before the output file does: a signal that stops the run once
    # the file is there never lands inside tqdm's constructor (whose half-built object
    # prints a traceback when collected).
    with _progress(video.frames, os.path.basename(path)) as bar, _output(av, out) as sink:
      # Every stream is added before the first packet is muxed (which writes the header).
      stream = _video_stream(sink, video.codec_context.width, video.codec_context.height,
                             rate, base)
      sink_audio = sink.add_stream_from_template(audio) if audio is not None else None
      demuxed = source.demux(*[s for s in (video, audio) if s is not None])
      for packet in _read(demuxed, path, av):
        if packet.stream is audio:
          if packet.dts is not None:
            packet.stream = sink_audio
            _mux(sink, packet)
          continue
        for frame in _read(_decode(packet), path, av):
          raise_if_signalled()
          image = frame.to_ndarray(format="rgb24")
          if image.shape[:2] != (stream.height, stream.width):
            raise BadImageError(f"{path}: frame {count} is {image.shape[1]}x{image.shape[0]} "
                                f"pixels, the clip {stream.width}x{stream.height}: clips that "
                                "change size are not supported")
          pts = count * step if frame.pts is None else frame.pts
          _encode(sink, stream, _check(image, restore(image)), pts)
          count += 1
          bar.update()
      if not count:
        raise BadImageError(f"{path}: no frame could be decoded")
      if video.frames and count < video.frames:  # FFmpeg may end a cut-off file quietly.
        raise BadImageError(f"{path}: damaged video (only {count} of its {video.frames} "
                            "frames could be decoded: the file is cut short?)")
      _encode(sink, stream, None)
  return count


def _decode(packet) -> Iterator:
  """The frames of ``packet``, decoded lazily: inside :func:`_read`, errors name the file."""
  yield from packet.decode()


def _reason(e: Exception) -> str:
  return getattr(e, "strerror", None) or str(e).split(":")[0] or type(e).__name__


def _read(items: Iterator, path: str, av) -> Iterator:
  """``items`` with FFmpeg's decoding errors as :class:`BadImageError` naming ``path``."""
  try:
    yield from items
  except (av.FFmpegError, ValueError) as e:
    if isinstance(e, OSError) and not isinstance(e, av.error.InvalidDataError):
      raise UserError(f"{path}: {_reason(e)}") from e
    raise BadImageError(f"{path}: damaged video ({_reason(e)})") from e


def frames_to_video(frames: Sequence[str], out: str, restore: Restore,
                    rate: fractions.Fraction = _DEFAULT_RATE) -> int:
  """Restores image files in order into one MP4 clip at ``rate`` frames per second.

  Args:
    frames: image files of one size, in playing order.
    out: the output ``.mp4``; written only when every frame succeeded.
    restore: uint8 [H, W, 3] RGB -> uint8 [H, W, 3] RGB.
    rate: frames per second.

  Returns:
    The number of frames written.

  Raises:
    BadImageError: a frame is unreadable or of another size than the first.
    UserError: PyAV is missing, or ``out`` cannot be written.
  """
  av = import_av()
  if not frames:
    raise BadImageError(f"{out}: no frames")
  base = 1 / rate
  with _output(av, out) as sink, _progress(len(frames), os.path.basename(out)) as bar:
    stream = None
    for i, path in enumerate(frames):
      raise_if_signalled()
      image = load_image(path)
      if stream is None:
        stream = _video_stream(sink, image.shape[1], image.shape[0], rate, base)
        first = (path, image.shape)
      elif image.shape != first[1]:
        raise BadImageError(f"{path}: frame of {image.shape[1]}x{image.shape[0]} pixels, but "
                            f"{first[0]} has {first[1][1]}x{first[1][0]}: frames of one clip "
                            "must have one size")
      _encode(sink, stream, _check(image, restore(image)), i)
      bar.update()
    _encode(sink, stream, None)
  return len(frames)
