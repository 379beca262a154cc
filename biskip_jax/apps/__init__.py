"""Applications built on inference: the local demo page."""
