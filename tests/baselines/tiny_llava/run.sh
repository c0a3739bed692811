#!/usr/bin/env bash
# The run behind the committed baseline of the regression gate (README, "Regression gate"): the shipped tiny
# LLaVA on two vrp_shapes tasks, 40 docs each, cheap scoring, a small ablation of layer 1 (robustness AUC).
# Deterministic for its seed on one machine. Writes OUTPUT_PATH/tiny_llava/<stamp>_*.
#
#   bash tests/baselines/tiny_llava/run.sh OUTPUT_PATH
#   vrp-bench regress --baseline tests/baselines/tiny_llava --current OUTPUT_PATH/tiny_llava
#
# Regenerate the baseline (after a change that is meant to move the scores, or a new report format): delete
# this folder's *_results.json, *_samples_*.jsonl and *_ablation_*.jsonl, run `bash ... run.sh tests/baselines`
# from the repository root, and delete the *_probes_* files it also writes (the gate does not read them).
# tests/test_regress.py checks that the baseline report's command line is this one.
set -euo pipefail
output_path=${1:?usage: run.sh OUTPUT_PATH}
vrp-bench ablate --model tiny_llava --model_args sc_samples=4 --tasks vrp_shapes_color,vrp_shapes_exists_random --limit 40 --bootstrap_resamples 200 --permutations 0 --cv_repeats 1 --layer 1 --fractions 0,0.5,1 --ablation_seeds 1 --ablation_units random --patch_fraction 0 --calibration_docs 16 --log_samples --output_path "$output_path"
