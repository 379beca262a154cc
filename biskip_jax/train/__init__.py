"""Training: the jitted step (Algorithm 1), the loop with resume and validation,
checkpoints, several processes, and the logs (``logs/``)."""
