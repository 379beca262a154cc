"""Trains Bi-Skip: ``biskip-train --config=biskip[:SCHEME] --workdir=DIR``.

The same as ``python train.py ...`` from the repository root. Any config field can be
overridden, e.g. ``--config.train.num_steps=1000``. Running the same command again resumes from
the latest checkpoint in DIR. Stopped by SIGTERM or Ctrl-C, it saves a checkpoint and exits
with status 128 + the signal's number (143, 130): not a success.

Several processes (hosts) train one run when launched with ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (or ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), or under SLURM, Open MPI or on a Cloud TPU pod: see docs/scaling.md.
"""

import os
import sys
import traceback

import jax
from absl import app, flags

from biskip_jax import cli
from biskip_jax.errors import UserError
from biskip_jax.train import multihost, train_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
cli.define_config_flag("Training configuration: a file or a shipped config's name, then "
                       ":SCHEME, e.g. biskip:A2-S.")
flags.mark_flags_as_required(["config", "workdir"])
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process runs: HOST:PORT of process 0's machine, "
    f"where it serves the coordinator (default ${multihost.ENV_ADDRESS}).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, f"Multi-process runs: processes in the run (default "
    f"${multihost.ENV_NUM_PROCESSES}).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, f"Multi-process runs: this process, 0 to num_processes - 1 (default "
    f"${multihost.ENV_PROCESS_ID}).")
_TIMEOUT = flags.DEFINE_float(
    "distributed_timeout", 300, "Multi-process runs: seconds to wait for the coordinator and "
    "for every process to join.")
_HEARTBEAT = flags.DEFINE_float(
    "heartbeat_timeout", 100, "Multi-process runs: seconds without news of a process after "
    "which the others stop with an error.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.log_progress_to_stderr()
  try:
    multihost.initialize(coordinator_address=_COORDINATOR.value,
                         num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                         timeout_s=_TIMEOUT.value, heartbeat_timeout_s=_HEARTBEAT.value)
    train_lib.train_and_evaluate(cli.config_flag(), _WORKDIR.value)
  except UserError:
    raise  # One line and exit status 2 (cli.run), in a multi-process run too.
  except train_lib.Interrupted as e:
    sys.exit(128 + e.signum)
  except Exception as e:  # pylint: disable=broad-except
    if not jax.distributed.is_initialized():
      raise
    if isinstance(e, jax.errors.JaxRuntimeError):  # A collective whose peer has gone.
      reason = next((l.strip() for l in str(e).splitlines() if l.strip()), type(e).__name__)
      print(f"{cli.prog()}: error: process {jax.process_index()}: a collective with the other "
            f"processes failed ({reason}); another process has probably stopped: see its log",
            file=sys.stderr)
    else:
      traceback.print_exc()
    sys.stderr.flush()
    # Leave at once: the other processes then fail in their next collective (or miss this
    # one's heartbeat) instead of waiting in JAX's exit barrier for a process that is gone.
    os._exit(1)


def run() -> None:
  """Parses the flags and trains (the ``biskip-train`` console script)."""
  cli.run(main)
