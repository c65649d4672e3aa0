#!/bin/sh
# The project's one install command, run by both `make install` and the Dockerfile so the two cannot drift:
#   scripts/install.sh dev   editable install with the dev tools: the development venv and CI (`make`)
#   scripts/install.sh cpu   a regular (non-editable) install of the service and trainer: the CPU image
#   scripts/install.sh gpu   the same plus TensorFlow's CUDA libraries from PyPI: the GPU image
# PYTHON names the interpreter whose environment receives the packages (default: python on PATH).
set -eu

python="${PYTHON:-python}"
case "${1:-cpu}" in
    dev) set -- -e '.[dev]' ;;
    cpu) set -- . ;;
    gpu) set -- . 'tensorflow[and-cuda]' ;;
    *)
        echo "usage: $0 [dev|cpu|gpu]" >&2
        exit 2
        ;;
esac
exec "$python" -m pip install "$@"
