"""A local web page that deblurs a dropped photo: ``biskip-demo [--ckpt=RUN] [--port=8501]``.

The same as ``python demo.py ...`` from the repository root. Needs the optional extra ``demo``
(``pip install -e ".[demo]"``). Without ``--ckpt`` the page uses the shipped general-purpose
model (``biskip_jax/inference/pretrained/``); ``--ckpt=RUN`` takes a training run. Open the printed
URL, drop a photo, and get the restored image, before | after, the time taken and a PNG download.
The page is served on this machine only (``--host=127.0.0.1``) and sends nothing elsewhere.
"""

from absl import flags

from biskip_jax import cli
from biskip_jax.apps import demo_lib
from biskip_jax.errors import UserError
from biskip_jax.inference import full_resolution

_CKPT = cli.define_ckpt_flag()
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to serve on; 0.0.0.0 makes the page "
                            "reachable from other machines.")
_PORT = flags.DEFINE_integer("port", 8501, "Port to serve on.")
_DTYPE = cli.define_dtype_flag()


def main(argv):
  cli.log_progress_to_stderr()
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {' '.join(argv[1:])}: {cli.prog()} takes only "
                    "flags")
  demo_lib.import_streamlit()  # A missing extra stops before the model loads.
  deblurrer = full_resolution.Deblurrer.load(_CKPT.value, dtype=_DTYPE.value)
  name = _CKPT.value + ("" if deblurrer.step is None else f" (step {deblurrer.step})")
  demo_lib.serve(deblurrer, name, host=_HOST.value, port=_PORT.value)


def run() -> None:
  """Parses the flags and serves the page (the ``biskip-demo`` console script)."""
  cli.run(main)
