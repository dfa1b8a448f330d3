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
# 5. with VARIANTS=1, prior preservation too (not shipped: it keeps the known shapes but not the
#    star; docs/adapters.md), measured into eval-prior.json
if [[ "${VARIANTS:-0}" == 1 ]]; then
    sfumato train "$here/prior.toml" --overwrite --no-progress
    python -m builds.shapes_lora.evaluate --lora runs/shapes-lora/run-prior/lora.safetensors \
        --out "$here/eval-prior.json" --grid /tmp/shapes-lora-prior.png
fi

# The variants docs/adapters.md compares (not shipped; each writes an eval-*.json):
#   U-Net only:          sfumato train builds/shapes_lora/lora.toml --set task.train_text_encoder=false --out runs/shapes-lora/run-unet-only
#   with known shapes:   python -m builds.shapes_lora.make_data --known 150 --out runs/shapes-lora/stars-known
#                        sfumato train builds/shapes_lora/lora.toml --set dataset.root=$PWD/runs/shapes-lora/stars-known --out runs/shapes-lora/run-known
#   ... and dropout:     add --set task.condition_dropout=0.1
#   then:                python -m builds.shapes_lora.evaluate --lora runs/shapes-lora/<run>/lora.safetensors --out builds/shapes_lora/eval-<variant>.json --grid /tmp/grid.png
#   a lower scale:       python -m builds.shapes_lora.evaluate --scale 0.7 --out builds/shapes_lora/eval-scale-0.7.json --grid /tmp/grid.png
#   prior preservation:  sfumato train builds/shapes_lora/prior.toml (step 5, VARIANTS=1; the base model first draws 144 class images of
#                        circles, squares and triangles from 48 shapes-style prompts into runs/shapes-lora/class-known)
#   ... U-Net only:      add --set task.train_text_encoder=false --out runs/shapes-lora/run-prior-unet-only
#   ... rank 2, 1,000 steps:  add --set task.rank=2 --set task.alpha=2.0 --set train.steps=1000 --out runs/shapes-lora/run-prior-r2-1000
#   ... weight 0.5, 1,000 steps:  add --set task.prior_loss_weight=0.5 --set train.steps=1000 --out runs/shapes-lora/run-prior-w0.5-1000
#   ... weight 0.3, 1,000 steps:  the same with prior_loss_weight=0.3 (eval-prior-weight0.3-1000.json); none beat the shipped one
