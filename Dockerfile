# CPU image of the genserve service; the bundled model_store/ is baked in and can be replaced by a volume.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY app ./app
COPY genserve ./genserve
COPY training ./training
RUN pip install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    GENSERVE_HOST=0.0.0.0 GENSERVE_PORT=8000 GENSERVE_MODEL_STORE=/models
RUN useradd --create-home --uid 10001 genserve
COPY --from=build /opt/venv /opt/venv
COPY --chown=genserve:genserve model_store /models
USER genserve
WORKDIR /home/genserve
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["python", "-m", "app"]
