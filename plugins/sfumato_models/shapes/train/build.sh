#!/usr/bin/env bash
# Rebuild the built-in `shapes` model from scratch (run from the repository root).
# On a busy 2-core CPU, one thread per training process is faster than two.
set -euo pipefail
here=plugins/sfumato_models/shapes
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# 1. the caption tokenizer (366 tokens)
sfumato tokenizer '{"type": "shapes", "length": 20000, "seed": 1, "resolution": 16}' \
    --every 7 --vocab-size 640 --context-length 24 --out "$here/tokenizer.json"
# 2. CLIP and 3. the VAE (independent: run them side by side)
sfumato train "$here/train/clip.toml" --no-progress &
sfumato train "$here/train/vae.toml" --no-progress &
wait
# 2b. a sharper image tower against the locked text tower (CLIP guidance, zero-shot), in two runs
sfumato train "$here/train/clip-image.toml" --no-progress
sfumato train "$here/train/clip-image-continue.toml" --no-progress &
# 4. the latent diffusion U-Net on their weights, with latents scaled to unit variance, then
#    continued from its weights (beside the image tower's second run)
scale=$(python "$here/train/latent_scale.py")
sfumato train "$here/train/unet.toml" --set autoencoder.scaling_factor="$scale" --no-progress
sfumato train "$here/train/unet-continue.toml" --set autoencoder.scaling_factor="$scale" --no-progress
sfumato train "$here/train/unet-finish.toml" --set autoencoder.scaling_factor="$scale" --no-progress
sfumato train "$here/train/unet-polish.toml" --set autoencoder.scaling_factor="$scale" --no-progress
sfumato train "$here/train/unet-extend.toml" --set autoencoder.scaling_factor="$scale" --no-progress
wait
# 5. float16 weights and the pipeline spec, into the package, and the model card's sample grid
python "$here/train/package.py"
python "$here/train/samples.py"
