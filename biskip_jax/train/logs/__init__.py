"""Training logs: TensorBoard, metrics.jsonl and terminal writers, the progress line and
profiler window, and log files that survive a full disk."""
