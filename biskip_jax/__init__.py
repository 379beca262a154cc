"""biskip-jax: a JAX/Flax reimplementation of Bi-Skip (Zhang et al., 2019).

Module map: the stages, what each module owns, and where the paper's equations live.

config/       config_defaults: every config field, declared once with its comment and default;
              config_checks: every settings check (ranges, names, devices), the upgrade of a
              stored config onto today's fields, and WORKDIR/config.json
nn/           the networks (paper §4.1)
  models      generator (Fig. 5: Skip / Bi-Skip paths, ResBlocks, global residual; Table 1
              variants) and the WGAN critic (PatchGAN)
  layers      conv-norm-act, ResBlock, strided and up-sampling convs (CPU rewrites by platform)
  conv        convolutions with fast XLA:CPU gradients
  vgg         VGG19 features F of eq. 4 (input normalisation); vgg_loading: its ImageNet weights
objective/    the loss (paper §4.2-4.3)
  losses      eq. 3 (batch mean), eq. 4 (bi-level loss l_i: pixel + VGG19 feature), eq. 5-7
              (WGAN-GP: adversarial loss, gradient penalty), eq. 12 (critic), eq. 13 (generator)
  spl         self-paced learning: eq. 8-9 (regulariser), eq. 10 (q(t)), eq. 11 (v_i), λ from the
              previous epoch (Algorithm 1, line 10)
  schemes     Table 1's scheme names (SA1P-BS, ...) -> loss switches and variant
data/         image_io (read / write / list images; uint8 <-> [-1, 1]), blur (synthetic
              camera-shake kernels, DESIGN §7), datasets/ (GoPro, Köhler, folder, frames,
              synthetic, mixing; collect_photos), input_pipeline (grain batches for training,
              ordered examples for evaluation)
train/        train_step: TrainState and the jitted step, Algorithm 1 lines 5-10 (eq. 4, 11-13);
              train_lib: Algorithm 1 over epochs, resume, validation, signals; checkpointing
              (orbax; best by PSNR; damaged ones skipped); workdir_lock (one train.py per
              workdir); multihost (several processes in one run)
  logs/       writers (TensorBoard, metrics.jsonl, terminal), periodic_actions (progress line,
              profiler window), log_files (log files that survive a full disk)
evaluation/   paper §6: metrics (PSNR, SSIM), shift_tolerant (Köhler's §6.1 and Levin's
              protocols), image_signature (saliency, §6.2), baselines (unsharp mask), eval_lib
              (the protocol and metrics.json of evaluate.py)
inference/    loading (the one loader of any --ckpt), full_resolution (Deblurrer: size buckets,
              tiles, self-ensemble), pretrained (the shipped model's files, checksum-verified;
              pretrained/ holds them), shipping (a run exported as a shipped model, and the runs
              behind its weights), deblur_lib (photos), video, export_lib (StableHLO, ONNX)
apps/         demo_lib: the local demo page (demo.py; Streamlit runs demo_page/page.py)
cli/          shared flags and error handling (cli.run: a UserError is one line, exit 2); one
              module per program (train, evaluate, deblur, demo, export, pretrained)
errors        UserError; output_files: atomic writes, SHA-256, output folders

Elsewhere: configs/ (biskip.py: the paper's settings, i.e. config_defaults; quickstart.py,
pretrain.py, ablation.py, tiny.py), experiments/ (deep_prior.py: eq. 2 and Fig. 2/4;
ablation.py: Table 1, with ablation_report.py its tables, paired comparisons and curves;
plot_spl.py: eq. 9-11 over a run), benchmarks/ (speed, memory, GPU scripts).

``import biskip_jax`` is cheap: the stages are imported when a program names them.
"""

__version__ = "0.1.0"
