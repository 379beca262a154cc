"""Using a trained generator: loading any ``--ckpt``, full-resolution restoration, the
shipped model, export, photos and video."""
