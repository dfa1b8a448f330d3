#!/usr/bin/env bash
# Rebuild the built-in `digits`, `digits-text` and `digits-guided` models from scratch, from
# anywhere in a checkout: it runs from the repository root, writes the training runs to runs/ and
# the shipped files to the plugin's folder. On a busy 2-core CPU, one thread per training process
# is faster than two.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=builds/digits
model=plugins/sfumato_models/digits
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# 1. the caption tokenizer (317 tokens: "a handwritten digit 3", "the digit three")
sfumato tokenizer '{"type": "digits", "split": "train", "resolution": 8}' \
    --vocab-size 320 --context-length 8 --out "$model/tokenizer.json"
# 2. the class-conditional U-Net (`digits`) and 3. the noise-aware classifier (`digits-guided`)
sfumato train "$here/unet.toml" --no-progress
sfumato train "$here/classifier.toml" --no-progress
# 4. the small CLIP, then 5. the text-conditional U-Net on its text tower (`digits-text`)
sfumato train "$here/clip.toml" --no-progress
sfumato train "$here/unet-text.toml" --no-progress
# 6. the class-conditional DiT trained by flow matching (`digits-flow`)
sfumato train "$here/dit-flow.toml" --no-progress
# 7. float16 weights and the four pipeline specs, into the plugin
python -m builds.digits.package
