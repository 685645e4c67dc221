#!/bin/sh
# SPDX-License-Identifier: MIT
# The run command of the README: installs what is missing, builds an optimised
# imgsearch and starts the server with its defaults (127.0.0.1:8080, data and
# model folders as the README describes), fetching the default model first
# when the model folder is empty. Extra arguments go to `serve`.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DIMS_BUILD_TESTS=OFF \
    -DIMS_BUILD_BENCH=OFF -DIMS_BUILD_FUZZ=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target imgsearch
bin=build-release/src/cli/imgsearch
model=${IMGSEARCH_MODEL:-${XDG_DATA_HOME:-$HOME/.local/share}/imgsearch/models/clip-vit-base-patch32}
if [ ! -f "$model/model.safetensors" ]; then
    echo "no CLIP model in $model: fetching openai/clip-vit-base-patch32 (about 600 MB)" >&2
    if ! "$bin" model fetch --out "$model"; then
        echo "could not fetch the model. Without network access, copy a Hugging Face CLIP" >&2
        echo "folder (config.json, model.safetensors, vocab.json, merges.txt) to $model" >&2
        echo "or point IMGSEARCH_MODEL at one, then run this again." >&2
        exit 1
    fi
fi
exec "$bin" serve "$@"
