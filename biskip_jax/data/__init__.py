"""Data: image files, synthetic blur, datasets of blurred/sharp pairs and the input pipeline."""
