"""Trains Bi-Skip: ``biskip-train --config=biskip[:SCHEME] --workdir=DIR``.

The same as ``python train.py ...`` from the repository root. Any config field can be
overridden, e.g. ``--config.train.num_steps=1000``. Running the same command again resumes from
the latest checkpoint in DIR. Stopped by SIGTERM or Ctrl-C, it saves a checkpoint and exits
with status 128 + the signal's number (143, 130): not a success.
"""

import sys

from absl import app, flags

from biskip_jax import cli, train_lib
from biskip_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
cli.define_config_flag("Training configuration: a file or a shipped config's name, then "
                       ":SCHEME, e.g. biskip:A2-S.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.log_progress_to_stderr()
  try:
    train_lib.train_and_evaluate(cli.config_flag(), _WORKDIR.value)
  except UserError as e:
    print(f"{cli.prog()}: error: {e}", file=sys.stderr)
    sys.exit(2)
  except train_lib.Interrupted as e:
    sys.exit(128 + e.signum)


def run() -> None:
  """Parses the flags and trains (the ``biskip-train`` console script)."""
  cli.run(main)
