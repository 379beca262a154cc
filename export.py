"""Exports the generator: ``python export.py [--ckpt=RUN] --format=stablehlo|onnx --out=FILE``.

Without ``--ckpt`` the shipped model is exported. The file takes and returns [B, H, W, 3]
float32 NHWC RGB in [-1, 1] for any batch and any H, W that are multiples of 32; ``FILE.json``
beside it says so (``biskip_jax/inference/export_lib.py``). ``--format=onnx`` needs the ``export``
extra.
"""

# The flags and main() are in biskip_jax/cli/export.py (also installed as biskip-export).
from biskip_jax.cli import export

if __name__ == "__main__":
  export.run()
