"""Evaluation (paper §6): PSNR/SSIM, shift-tolerant protocols, saliency, classical
baselines, and the protocol behind ``evaluate.py``."""
