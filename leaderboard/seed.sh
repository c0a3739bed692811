#!/usr/bin/env bash
# The seeded board: the four tiny models on vrp_shapes, with the ablation sweep, submitted and built.
# Run from the repository root: bash leaderboard/seed.sh   (about 3 minutes per model on 2 CPU cores)
# These are also the settings a new submission must use to be comparable with the board (CONTRIBUTING.md).
set -euo pipefail
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
for model in tiny_llava tiny_paligemma tiny_qwen2_vl tiny_qwen2_5_vl; do
  vrp-bench ablate --model "$model" --tasks vrp_shapes --limit 50 --batch_size 16 --seed 0 \
    --fractions 0,0.5,1 --ablation_seeds 2 --output_path "$runs" --log_samples --save_traces --verbosity WARNING
  vrp-bench leaderboard submit "$runs/$model"
done
vrp-bench leaderboard build
