"""A local web page that deblurs a dropped photo: ``python demo.py [--ckpt=RUN] [--port=8501]``.

Needs the optional extra ``demo`` (``pip install -e ".[demo]"``). Without ``--ckpt`` the page
uses the shipped general-purpose model (``biskip_jax/inference/pretrained/``, see
``docs/MODEL_CARD.md``); ``--ckpt=RUN`` takes a training run. Open the printed URL, drop a
photo, and get the restored image, before | after, the time taken and a PNG download.
"""

# The flags and main() are in biskip_jax/cli/demo.py (also installed as biskip-demo).
from biskip_jax.cli import demo

if __name__ == "__main__":
  demo.run()
