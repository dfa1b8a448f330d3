#!/usr/bin/env bash
# Teach the built-in `shapes` model a five-pointed star with a LoRA, ship it, and measure it.
# Runs from the repository root; writes the run to runs/shapes-lora/, the LoRA to the shapes
# model's folder, the figures to builds/shapes_lora/eval.json and the grid to docs/.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=builds/shapes_lora
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# 1. 150 star scenes with shapes-style captions (runs/shapes-lora/stars)
python -m builds.shapes_lora.make_data --count 150
# 2. the LoRA: rank 4 on the U-Net's attention, feed-forward and projections and the text
#    encoder's attention and MLP (1,500 steps of 16)
sfumato train "$here/lora.toml" --overwrite --no-progress
# 3. ship the diffusers / PEFT file (float32, as trained)
cp runs/shapes-lora/run/lora.safetensors plugins/sfumato_models/shapes/star-lora.safetensors
# 4. before / after: the share of star prompts that show a star (and of the known shapes)
python -m builds.shapes_lora.evaluate --lora plugins/sfumato_models/shapes/star-lora.safetensors

# The variants docs/adapters.md compares (not shipped; each writes an eval-*.json):
#   U-Net only:          sfumato train builds/shapes_lora/lora.toml --set task.train_text_encoder=false --out runs/shapes-lora/run-unet-only
#   with known shapes:   python -m builds.shapes_lora.make_data --known 150 --out runs/shapes-lora/stars-known
#                        sfumato train builds/shapes_lora/lora.toml --set dataset.root=$PWD/runs/shapes-lora/stars-known --out runs/shapes-lora/run-known
#   ... and dropout:     add --set task.condition_dropout=0.1
#   then:                python -m builds.shapes_lora.evaluate --lora runs/shapes-lora/<run>/lora.safetensors --out builds/shapes_lora/eval-<variant>.json --grid /tmp/grid.png
#   a lower scale:       python -m builds.shapes_lora.evaluate --scale 0.7 --out builds/shapes_lora/eval-scale-0.7.json --grid /tmp/grid.png
