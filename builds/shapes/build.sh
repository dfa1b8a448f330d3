#!/usr/bin/env bash
# Rebuild the built-in `shapes` model from scratch, from anywhere in a checkout: it runs from the
# repository root, writes the training runs to runs/ and the shipped files to the plugin's folder.
# On a busy 2-core CPU, one thread per training process is faster than two.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=builds/shapes
model=plugins/sfumato_models/shapes
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# 1. the caption tokenizer (366 tokens)
sfumato tokenizer '{"type": "shapes", "length": 20000, "seed": 1, "resolution": 16}' \
    --every 7 --vocab-size 640 --context-length 24 --out "$model/tokenizer.json"
# 2. CLIP and 3. the VAE (independent: run them side by side)
sfumato train "$here/clip.toml" --no-progress &
sfumato train "$here/vae.toml" --no-progress &
wait
# 2b. a sharper image tower against the locked text tower (CLIP guidance, zero-shot), in two runs
sfumato train "$here/clip-image.toml" --no-progress
sfumato train "$here/clip-image-continue.toml" --no-progress &
# 4. the latent diffusion U-Net on their weights, with latents scaled to unit variance, then
#    continued from its weights (beside the image tower's second run)
scale=$(python -m builds.shapes.latent_scale)
sfumato train "$here/unet.toml" --set autoencoder.scaling_factor="$scale" --no-progress
sfumato train "$here/unet-continue.toml" --set autoencoder.scaling_factor="$scale" --no-progress
sfumato train "$here/unet-finish.toml" --set autoencoder.scaling_factor="$scale" --no-progress
sfumato train "$here/unet-polish.toml" --set autoencoder.scaling_factor="$scale" --no-progress
sfumato train "$here/unet-extend.toml" --set autoencoder.scaling_factor="$scale" --no-progress
wait
# 5. float16 weights and the pipeline spec, into the plugin, and the model card's sample grid
python -m builds.shapes.package
python -m builds.shapes.samples
