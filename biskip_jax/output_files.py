"""Files written for the user: whole or not at all, never through a link, never over a stranger's.

:func:`atomic_write` is the one way the project writes a file: into a temporary file beside the
target, renamed over it once complete. A run stopped part-way (a signal, a full disk, an error)
leaves the earlier file as it was, and the rename replaces a link at the target rather than
writing into the file it points to. :func:`sha256` is the one checksum of what is written or
read back (a shipped model, a run's ``config.json``, downloaded VGG weights).

:class:`OutputFolder` is the rule of the programs whose ``--out`` is a user's folder
(``deblur.py``, ``evaluate.py``, ``export.py``): a file there is replaced only when the
program's record in that folder, ``.PROGRAM_outputs.jsonl``, lists it as the program's own and
it is unchanged since (same size and modification time). Anything else -- the user's photo, a
link, another program's result, an earlier result edited since -- is never replaced: the
program writes under a fresh name or refuses, with one line naming the file.
"""

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from typing import IO, Container, Iterator

from biskip_jax.errors import UserError, os_errors_as_user_errors

_umask: int | None = None


def _file_mode() -> int:
  """The mode ``open()`` gives a new file (``mkstemp`` gives 0600)."""
  global _umask  # pylint: disable=global-statement
  if _umask is None:  # Read once: os.umask can only be read by setting it.
    _umask = os.umask(0)
    os.umask(_umask)
  return 0o666 & ~_umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
  """Opens a temporary file beside ``path``; renames it onto ``path`` when the block succeeds.

  The temporary file is hidden (``.NAME.XXXXXXXX.partial``), created exclusively (``O_EXCL``: never
  an existing file or link) and removed if the block raises (``BaseException`` too, so a
  signal turned into an exception leaves nothing behind). The rename replaces ``path`` itself:
  a link there is replaced, its target untouched.

  Args:
    path: the file to write; its folder must exist.
    mode: ``"wb"`` or ``"w"``.

  Raises:
    OSError: the folder cannot be written (full, read-only, missing); ``path`` is unchanged.
  """
  path = os.fspath(path)
  folder, name = os.path.split(os.path.abspath(path))
  # The name cut short: a result whose name is near the 255-byte limit still gets a temp file.
  fd, tmp = tempfile.mkstemp(prefix=f".{name[:64]}.", suffix=".partial", dir=folder)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
    os.chmod(tmp, _file_mode())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def sha256(source: bytes | str | os.PathLike[str]) -> str:
  """Hex SHA-256 of ``source``: the bytes themselves, or the file at a path (read in 1 MiB
  blocks, so a large file is never held whole)."""
  digest = hashlib.sha256()
  if isinstance(source, bytes):
    digest.update(source)
  else:
    with open(source, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  return digest.hexdigest()


def file_kind(path: str, *, follow: bool = True) -> str | None:
  """What ``path`` is when it is not a regular file: ``"a FIFO"``, ``"a directory"``, ...

  Returns None for a regular file (through links when ``follow``) and for a path that does
  not exist (its reader reports that). Nothing is opened: reading a FIFO or a device blocks
  or never ends.
  """
  try:
    mode = (os.stat if follow else os.lstat)(path).st_mode
  except (OSError, ValueError):
    return None
  if stat.S_ISREG(mode):
    return None
  for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                     (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                     (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a link")):
    if test(mode):
      return kind
  return "not a regular file"


def _fingerprint(st: os.stat_result) -> list[int]:
  return [st.st_size, st.st_mtime_ns]


class OutputFolder:
  """The files one program wrote into a folder, and the rule that only those are replaced.

  The record ``FOLDER/.PROGRAM_outputs.jsonl`` gets one JSON line per file: ``{"name": REL}``
  before it is written (so a run stopped part-way still marks it), then ``{"name": REL,
  "file": [size, mtime_ns]}`` once it is complete. ``REL`` is the path relative to the folder.

  Args:
    folder: the output folder (created by :meth:`writing` if needed).
    program: the program's short name, e.g. ``"deblur"`` (for ``deblur.py`` and
      ``biskip-deblur`` alike); it names the record and the messages.
    where: what messages start with (default ``"--out FOLDER"``).
    legacy: an older record to read as well (a JSON ``{"outputs": [names]}``).
  """

  def __init__(self, folder: str, program: str, *, where: str | None = None,
               legacy: str | None = None):
    self.folder, self.program = folder, program
    self.where = where or f"--out {folder}"
    self._by = f"{'an' if program[:1] in 'aeiou' else 'a'} {program} run"  # For messages.
    self.record_path = os.path.join(folder, f".{program}_outputs.jsonl")
    self._legacy = os.path.join(folder, legacy) if legacy else None
    self._entries: dict[str, list[int] | None] | None = None
    self._lines = 0  # In the record file: compacted when far more than its entries.

  @property
  def entries(self) -> dict[str, list[int] | None]:
    """``{REL: [size, mtime_ns]}`` of the files recorded, ``None`` where unfinished."""
    if self._entries is None:
      self._entries = {}
      if self._legacy and file_kind(self._legacy, follow=False) is None:
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
          with open(self._legacy) as f:
            self._entries.update(dict.fromkeys(json.load(f).get("outputs", [])))
      if os.path.isfile(self.record_path) and not os.path.islink(self.record_path):
        with contextlib.suppress(OSError):
          with open(self.record_path, encoding="utf-8", errors="replace") as f:
            for line in f:
              self._lines += 1
              try:
                entry = json.loads(line)
                self._entries[str(entry["name"])] = entry.get("file")
              except (ValueError, KeyError, TypeError):
                continue  # A line cut short by a kill: the file it names is not ours.
    return self._entries

  def path(self, rel: str) -> str:
    return os.path.join(self.folder, rel)

  def why_not(self, rel: str) -> str | None:
    """None if the program may write ``rel``; else why not (``"exists and was not ..."``)."""
    try:
      st = os.lstat(self.path(rel))
    except OSError:  # Nothing there to lose (or a name the write will fail on: reported then).
      return None
    if stat.S_ISLNK(st.st_mode):
      return "is a link"
    if not stat.S_ISREG(st.st_mode):
      return f"is {file_kind(self.path(rel), follow=False)}"
    if rel not in self.entries:
      return f"exists and was not written by {self._by}"
    recorded = self.entries[rel]
    if recorded is not None and list(recorded) != _fingerprint(st):
      return f"was written by {self._by} but changed since"
    return None

  def free_name(self, rel: str, taken: Container[str]) -> str:
    """``rel``, or ``STEM_1.EXT``, ``STEM_2.EXT``, ...: the first not in ``taken`` that the
    program may write (free, or its own unchanged file)."""
    stem, ext = os.path.splitext(rel)
    candidate, k = rel, 1
    while candidate in taken or self.why_not(candidate) is not None:
      candidate, k = f"{stem}_{k}{ext}", k + 1
    return candidate

  def check(self, rel: str) -> None:
    """Raises a one-line :class:`UserError` if the program may not write ``rel``."""
    why = self.why_not(rel)
    if why is not None:
      raise UserError(f"{self.where}: {self.path(rel)} {why}; it is left as it "
                      "is: choose another folder or name, or move the file away")

  def _append(self, entries: list[dict]) -> None:
    """Appends lines to the record (never through a link, never blocking on a FIFO).

    A record grown to many lines per file (each run adds one per file it writes) is first
    rewritten with one line per file.
    """
    if self._lines > 2 * len(self.entries) + 100:
      with atomic_write(self.record_path, "w") as f:
        for name, done in self.entries.items():
          f.write(json.dumps({"name": name} if done is None else {"name": name, "file": done})
                  + "\n")
      self._lines = len(self.entries)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(self.record_path, flags, _file_mode())
    try:
      if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise UserError(f"{self.where}: {self.record_path} is not a regular file; "
                        "remove it")
      os.write(fd, "".join(json.dumps(e) + "\n" for e in entries).encode())
    finally:
      os.close(fd)
    self._lines += len(entries)

  def record(self, rels: list[str]) -> None:
    """Records ``rels`` as about to be written (before any of them is); names recorded
    already keep their entries.

    Raises:
      UserError: the folder cannot be created or written.
    """
    new = [r for r in rels if r not in self.entries]
    try:
      with os_errors_as_user_errors(f"{self.where}: cannot create the folder"):
        os.makedirs(self.folder, exist_ok=True)
    except UserError as e:
      if isinstance(e.__cause__, FileExistsError):  # makedirs' word for "a file is there".
        raise UserError(f"{self.where}: cannot create the folder ({self.folder} is a file)"
                        ) from e.__cause__
      raise
    if new:
      with os_errors_as_user_errors(f"{self.where}: cannot write to the folder"):
        self._append([{"name": r} for r in new])
    for r in new:
      self.entries[r] = None

  @contextlib.contextmanager
  def writing(self, rel: str) -> Iterator[str]:
    """Checks and records ``rel``, yields its path to write (atomically), then records it done.

    Raises:
      UserError: ``rel`` is not the program's to replace, or cannot be written (its
        ``__cause__`` is the ``OSError``).
    """
    self.check(rel)
    self.record([rel])
    path = self.path(rel)
    with os_errors_as_user_errors(f"{self.where}: cannot write {path}"):
      parent = os.path.dirname(path)
      if parent != self.folder:
        os.makedirs(parent, exist_ok=True)
      yield path
      done = _fingerprint(os.lstat(path))
      self._append([{"name": rel, "file": done}])
    self.entries[rel] = done
