"""Trains Bi-Skip: ``python train.py --config=configs/biskip.py[:SCHEME] --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.train.num_steps=1000``. Running the same
command again resumes from the latest checkpoint in DIR. Stopped by SIGTERM or Ctrl-C, it saves
a checkpoint and exits with status 128 + the signal's number (143, 130): not a success.
"""

# The flags and main() are in biskip_jax/cli/train.py (also installed as biskip-train).
from biskip_jax.cli import train

if __name__ == "__main__":
  train.run()
