# genserve: the HTTP service (and the trainer, `python -m training`) in one image.
#   docker build -t genserve:cpu .                               CPU (default)
#   docker build --build-arg DEVICE=gpu -t genserve:gpu .        NVIDIA GPU: adds TensorFlow's CUDA libraries;
#                                                                run with `--gpus all` (NVIDIA container toolkit)
# The bundled model_store/ is baked in at /models; mount another store there (or point GENSERVE_MODEL_STORE
# elsewhere) to serve other models.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG DEVICE=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/
COPY genserve genserve/
COPY app app/
COPY training training/
# scripts/install.sh is also what `make install` runs: there `dev` (editable, with the test tools, exercised by
# every CI run), here `cpu` or `gpu`: a regular install of the same project into a venv we copy out below.
RUN sh scripts/install.sh "$DEVICE"

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    GENSERVE_HOST=0.0.0.0 \
    GENSERVE_PORT=8000 \
    GENSERVE_GRPC_PORT=8500 \
    GENSERVE_MODEL_STORE=/models
RUN useradd --create-home --uid 10001 --user-group genserve
COPY --from=build /opt/venv /opt/venv
# Owned by root: the service only reads the store.
COPY model_store/ /models/
USER 10001:10001
WORKDIR /home/genserve
# HTTP (genserve's routes, Open Inference Protocol v2, TensorFlow Serving REST) and TensorFlow Serving gRPC,
# on the port TensorFlow Serving uses for it.
EXPOSE 8000 8500
# Ready means the default model is loaded and warmed up; generation can take a minute to get there on a CPU.
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GENSERVE_PORT', '8000') + '/readyz', timeout=4)"]
# One process with one uvicorn worker: requests are batched inside the process, so scale out with replicas.
# Exec form keeps Python as PID 1, so SIGTERM starts the graceful drain (GENSERVE_SHUTDOWN_GRACE_S).
CMD ["python", "-m", "app"]
