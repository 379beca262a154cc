"""One run over several processes (hosts): the launch, and what the processes agree on.

A multi-host run starts one ``train.py`` per process (per machine, or per GPU under SLURM);
every process executes the same program on its own devices and they exchange gradients
through XLA's collectives (NCCL on GPUs, ICI on TPUs, gloo over TCP on CPUs).

Launch (:func:`initialize`): the coordinator address, the number of processes and this
process's id come from ``train.py``'s flags or from ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, and are passed to ``jax.distributed.initialize``;
without them SLURM, Open MPI and Cloud TPU pods are detected by JAX itself. A coordinator that
cannot be reached, or processes that do not all join, end the process with one line after
the timeout rather than a hang or an abort with a C++ stack.

Agreement: the processes must take every decision that involves a collective (a checkpoint,
a stop) at the same step, or one waits forever for the others. :func:`raise_first_error`
makes a setup error of one process every process's error; :func:`max_over_processes` turns a
per-process value (a received signal) into the same value everywhere; :func:`from_process_0`
hands process 0's result (validation) to all.
"""

import glob
import importlib.util
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import jax
import numpy as np

from biskip_jax import cli
from biskip_jax.errors import UserError

log = logging.getLogger("biskip_jax")

ENV_ADDRESS = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

# Longest error message handed from one process to the others (bytes of UTF-8).
_MAX_MESSAGE = 1000


def _on_cloud_tpu_vm() -> bool:
  """A Cloud TPU VM: TPU chips and libtpu (JAX then asks the VM's metadata for the pod)."""
  return ((os.path.exists("/dev/accel0") or bool(glob.glob("/dev/vfio/[0-9]*")))
          and importlib.util.find_spec("libtpu") is not None)


def detected_cluster() -> str | None:
  """The multi-process launcher JAX detects by itself, or None (a single process)."""
  env = os.environ
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
    return "SLURM"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return "Open MPI"
  if ("," in env.get("TPU_WORKER_HOSTNAMES", "") or "," in env.get("TPU_PROCESS_ADDRESSES", "")
      or env.get("MEGASCALE_COORDINATOR_ADDRESS")):
    return "Cloud TPU pod"
  if _on_cloud_tpu_vm():
    return "Cloud TPU VM"  # One host or a pod slice: JAX's metadata query tells.
  return None


def _setting(value: Any, flag: str, env: str) -> tuple[Any, str]:
  """A launch setting from its flag, else its environment variable: ``(value, source)``."""
  if value is not None:
    return value, f"--{flag}"
  return os.environ.get(env) or None, env


def _int_setting(value: Any, source: str, lowest: int) -> int:
  try:
    number = int(value)
  except (TypeError, ValueError):
    number = None
  if number is None or number < lowest:
    raise UserError(f"{source}={value}: must be an integer >= {lowest}")
  return number


def _split_address(address: str, source: str) -> tuple[str, int]:
  """``HOST:PORT`` -> (host, port), the host resolved; one line for anything else."""
  host, _, port = address.rpartition(":")
  host = host.strip("[]")  # [::1]:1234
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(f"{source}={address}: expected HOST:PORT, e.g. 10.0.0.1:1234 (the address "
                    "of process 0's machine and a free port)")
  try:
    socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
  except OSError as e:
    raise UserError(f"{source}={address}: cannot resolve {host} ({e.strerror or e})") from e
  return host, int(port)


def _check_port_free(port: int, source: str, address: str) -> None:
  """Process 0 serves the coordinator on ``port`` of every interface: it must be free."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    try:
      s.bind(("", port))
    except OSError as e:
      raise UserError(f"{source}={address}: port {port} cannot be served on this machine "
                      f"({e.strerror or e}); choose another port") from e


def _reachable(host: str, port: int) -> bool:
  try:
    with socket.create_connection((host, port), timeout=2):
      return True
  except OSError:
    return False


class _Deadline:
  """Ends the process with one line if the block has not finished after ``seconds``.

  ``jax.distributed.initialize`` blocks in C++ while it waits for the coordinator and the
  other processes, and on its own timeout aborts the interpreter with a stack dump; this
  timer (a Python thread: the wait releases the GIL) speaks first.
  """

  def __init__(self, seconds: float, message: Any):
    self._timer = threading.Timer(seconds, self._fire)
    self._timer.daemon = True
    self._message = message

  def _fire(self) -> None:
    print(f"{cli.prog() or 'python'}: error: {self._message()}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(2)

  def __enter__(self) -> "_Deadline":
    self._timer.start()
    return self

  def __exit__(self, *exc) -> None:
    self._timer.cancel()


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: float = 300,
               heartbeat_timeout_s: float = 100) -> None:
  """Joins this process to a multi-process run, if it is one; otherwise does nothing.

  Call it before anything else touches JAX's devices. A second call does nothing.

  Args:
    coordinator_address: ``HOST:PORT`` of process 0 (it serves the coordinator there); None
      reads ``JAX_COORDINATOR_ADDRESS``.
    num_processes: processes in the run; None reads ``JAX_NUM_PROCESSES``.
    process_id: this process, in ``[0, num_processes)``; None reads ``JAX_PROCESS_ID``.
    timeout_s: seconds to wait for the coordinator and for every process to join.
    heartbeat_timeout_s: a process that has not been heard of for this long is taken for dead,
      and the others stop (with a non-zero status).

  Raises:
    UserError: the settings are incomplete or malformed, or process 0 cannot serve the port.
      (A coordinator that cannot be reached, or processes missing after ``timeout_s``, end the
      process with status 2 and one line on stderr.)
  """
  if jax.distributed.is_initialized():
    return
  address, address_src = _setting(coordinator_address, "coordinator_address", ENV_ADDRESS)
  count, count_src = _setting(num_processes, "num_processes", ENV_NUM_PROCESSES)
  pid, pid_src = _setting(process_id, "process_id", ENV_PROCESS_ID)
  explicit = any(v is not None for v in (address, count, pid))
  cluster = None if explicit else detected_cluster()
  if not explicit and cluster is None:
    return
  kwargs: dict[str, Any] = {}
  if explicit:
    missing = [src for v, src in ((address, address_src), (count, count_src), (pid, pid_src))
               if v is None]
    if missing:
      raise UserError(f"a multi-process run needs the coordinator address, the number of "
                      f"processes and this process's id: set {' and '.join(missing)} too "
                      f"(--coordinator_address/{ENV_ADDRESS}, --num_processes/"
                      f"{ENV_NUM_PROCESSES}, --process_id/{ENV_PROCESS_ID})")
    count = _int_setting(count, count_src, 1)
    pid = _int_setting(pid, pid_src, 0)
    if pid >= count:
      raise UserError(f"{pid_src}={pid}: must be below the number of processes ({count_src}="
                      f"{count})")
    host, port = _split_address(str(address), address_src)
    if pid == 0:
      _check_port_free(port, address_src, address)
    kwargs = dict(coordinator_address=str(address), num_processes=count, process_id=pid)
    where = f"the coordinator at {address} ({address_src})"
  else:
    host, port, where = None, None, f"the {cluster} job's coordinator"
  # gloo runs the CPU collectives over TCP (the default of recent JAX; older ones had none).
  if jax.config.jax_cpu_collectives_implementation not in ("gloo", "mpi"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # JAX's own preemption service would take over SIGTERM; train_lib agrees on stops itself.
  jax.config.update("jax_enable_preemption_service", False)

  def late() -> str:
    if pid and host is not None and not _reachable(host, port):
      return (f"process {pid}: cannot reach {where} within {timeout_s:g} s: start process 0 "
              "first (or together), and check that its machine's address and port are "
              "reachable from here")
    return (f"process {pid if pid is not None else '?'}: not all processes joined {where} "
            f"within {timeout_s:g} s: start all {count or 'the'} processes with the same "
            "address and count, or raise --distributed_timeout")

  log.info("joining %s as process %s of %s (up to %g s)", where,
           "?" if pid is None else pid, count or "?", timeout_s)
  started = time.monotonic()
  with _Deadline(timeout_s, late):
    try:
      # JAX's own deadline is later: on it the C++ runtime aborts with a stack dump.
      jax.distributed.initialize(**kwargs, initialization_timeout=int(2 * timeout_s + 30),
                                 heartbeat_timeout_seconds=max(int(heartbeat_timeout_s), 1))
    except ValueError:
      if cluster != "Cloud TPU VM":
        raise
      log.info("no TPU pod detected: one process")  # A TPU VM whose metadata names no pod.
      return
  log.info("jax.distributed: process %d of %d (%d local devices of %d), joined in %.1f s",
           jax.process_index(), jax.process_count(), jax.local_device_count(),
           jax.device_count(), time.monotonic() - started)


def raise_first_error(error: UserError | None) -> None:
  """Raises the same ``UserError`` in every process if any process had one.

  Every process calls this at the same point with its own outcome (None: fine). The error of
  the lowest process index wins; other processes see it prefixed with its process index.
  Without it, one process stopping on a setup error would leave the others waiting for it in
  their next collective until the heartbeat timeout.
  """
  if jax.process_count() == 1:
    if error is not None:
      raise error
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  text = str(error).encode("utf-8")[:_MAX_MESSAGE] if error is not None else b""
  row = np.zeros(_MAX_MESSAGE + 1, np.int32)  # [had an error, message bytes...]
  row[0] = error is not None
  row[1:1 + len(text)] = np.frombuffer(text, np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(row))  # [processes, 1 + _MAX_MESSAGE]
  failed = np.flatnonzero(rows[:, 0])
  if not failed.size:
    return
  first = int(failed[0])
  if first == jax.process_index() and error is not None:
    raise error
  message = bytes(rows[first, 1:].astype(np.uint8)).rstrip(b"\0").decode("utf-8", "replace")
  raise UserError(f"process {first}: {message}")


def max_over_processes(value: int) -> int:
  """The largest of every process's ``value`` (all processes call it at the same step)."""
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))


def from_process_0(tree: Any) -> Any:
  """Process 0's ``tree`` of numbers (numpy arrays) in every process; the others' ignored."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def local_copy(tree: Any) -> Any:
  """Replicated arrays that span other processes' devices as this process's own copy.

  A train state replicated over every process's devices cannot be read or computed with
  outside ``jit`` (each process holds only its devices' shards); its first local shard is the
  whole value. Fully addressable arrays (one process) are returned as they are.
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if not x.is_fully_replicated:
        raise ValueError(f"array of shape {x.shape} is split over processes, not replicated")
      return x.addressable_data(0)
    return x
  return jax.tree.map(one, tree)
