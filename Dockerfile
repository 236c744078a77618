# vit-digits images. The default target, `runtime`, serves on CPU without torch: the ONNX export of
# each checkpoint run by ONNX Runtime, with the serving dependencies installed from
# requirements/serve.lock (pinned, hashes checked). `gpu` adds torch (CUDA) to serve on an NVIDIA
# GPU; `train` is the training stack for the compose `train` profile. torch's one version is in
# requirements/torch.txt.
#
#   CPU (default):  docker build -t vit-digits .
#   GPU (CUDA):     docker build --target gpu -t vit-digits:cuda .   (run with --gpus all)
#   training:       docker build --target train -t vit-digits-train .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS serve-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
# Only the lock file: editing code does not invalidate this layer. --no-deps: the lock is complete.
COPY requirements/serve.lock /tmp/serve.lock
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/serve.lock

# The serving venv without the installer (pip, setuptools): nothing installs at run time.
FROM serve-deps AS serve-venv
RUN /opt/venv/bin/python -m pip uninstall -y -q pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin vitdigits
COPY --from=serve-venv /opt/venv /opt/venv
WORKDIR /srv
COPY model/ model/
COPY app/ app/
# Bytecode compiled now: the root filesystem is read-only at run time, and compiling at every
# start would cost the cold start.
RUN /opt/venv/bin/python -m compileall -q app model
COPY checkpoints/ /srv/checkpoints/
RUN chmod -R a+rX /srv/checkpoints
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIT_DIGITS_HOST=0.0.0.0 \
    VIT_DIGITS_PORT=8000 \
    VIT_DIGITS_WORKERS=1 \
    VIT_DIGITS_CHECKPOINTS=/srv/checkpoints
USER vitdigits
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('VIT_DIGITS_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "app"]

# torch from PyPI (its Linux wheels bundle CUDA) on top of the serving dependencies.
FROM serve-deps AS gpu-deps
COPY requirements/torch.txt /tmp/torch.txt
RUN /opt/venv/bin/pip install "$(grep '^torch==' /tmp/torch.txt)" "safetensors>=0.4" \
    && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools

# The runtime image with torch: serves the .safetensors checkpoints on the GPU (TorchScript).
FROM runtime AS gpu
COPY --from=gpu-deps /opt/venv /opt/venv
ENV VIT_DIGITS_DEVICE=cuda

FROM ${PYTHON_IMAGE} AS train
# torch from PyTorch's CPU index unless told otherwise (an empty TORCH_INDEX_URL: pip's default
# index, whose Linux wheels bundle CUDA).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/venv
COPY requirements/torch.txt /tmp/torch.txt
RUN pip install -r /tmp/torch.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY model/ model/
COPY training/ training/
COPY app/ app/
RUN pip install -c /tmp/torch.txt ".[train]"
ENTRYPOINT ["python", "-m", "training"]
CMD ["ship", "--data-dir", "/data", "--download", "--output", "/srv/checkpoints/vit-digits.safetensors"]
