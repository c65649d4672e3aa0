#!/bin/sh
# Re-render the README's images with the service itself, from the bundled models:
#   scripts/render_docs_images.sh [PORT]
# Starts `python -m app` on 127.0.0.1:PORT (default 8765), waits until every bundled model is loaded, asks it
# for each image and stops it. The VAE's inputs are real MNIST test digits kept in docs/inputs/.
set -eu

port="${1:-8765}"
python="${PYTHON:-.venv/bin/python}"
url="http://127.0.0.1:$port"
out=docs/images
inputs=docs/inputs

GENSERVE_PORT="$port" GENSERVE_POLL_INTERVAL_S=0 "$python" -m app &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT INT TERM

"$python" - "$url" <<'PY'
import json, sys, time, urllib.request

deadline = time.monotonic() + 300
while True:
    try:
        with urllib.request.urlopen(sys.argv[1] + "/models", timeout=5) as response:
            models = json.load(response)["models"]
        if models and all(model["latest_available"] is not None for model in models):
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the service did not load every model within 300 s")
    time.sleep(1)
PY

fetch() {  # fetch OUTPUT CURL-ARGS...: fail loudly on any HTTP error
    target="$1"
    shift
    curl -sS --fail-with-body -o "$out/$target" "$@"
    echo "wrote $out/$target"
}

fetch mnist-dcgan-grid.png -X POST "$url/generate?model=mnist-dcgan&n=64&seed=42&cols=8"
fetch mnist-dcgan-walk.gif "$url/interpolate?model=mnist-dcgan&seeds=1,2,3,4&steps=48&loop=true&format=gif"
fetch mnist-cdcgan-grid.png -X POST "$url/generate?model=mnist-cdcgan&n=60&seed=7&cols=10"
fetch mnist-vae-grid.png -X POST "$url/generate?model=mnist-vae&n=64&seed=42&cols=8"
set --
for digit in 0 1 2 3 4 5 6 7 8 9; do
    set -- "$@" -F "image=@$inputs/mnist-test-$digit.png"
done
fetch mnist-vae-reconstruct.png -X POST "$url/reconstruct?model=mnist-vae&compare=true" "$@"
fetch mnist-vae-morph.gif -X POST "$url/interpolate?model=mnist-vae&steps=32&loop=true&format=gif" \
    -F "start=@$inputs/mnist-test-3.png" -F "end=@$inputs/mnist-test-8.png"
if [ -d model_store/fashion-dcgan ]; then
    fetch fashion-dcgan-grid.png -X POST "$url/generate?model=fashion-dcgan&n=64&seed=42&cols=8"
fi
