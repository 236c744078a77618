# vit-digits serving image. Multi-stage: `deps` builds a virtualenv with torch and the serving
# dependencies; `runtime` (the default target) holds only that venv, app/, model/ and the shipped
# checkpoints; `train` adds the training stack for the compose `train` profile.
#
#   CPU (default):  docker build -t vit-digits .
#   GPU (CUDA):     docker build -t vit-digits:cuda --build-arg TORCH_INDEX_URL= --build-arg TORCH_VERSION=2.9.1 .
#                   (PyPI's Linux torch wheels bundle CUDA; run with --gpus all and VIT_DIGITS_DEVICE=cuda)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS deps
# torch comes from PyTorch's CPU index unless told otherwise, so no CUDA libraries land in the
# image; an empty TORCH_INDEX_URL means pip's default index (and any PIP_FIND_LINKS).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi
# Only the dependency list: editing code does not invalidate this layer.
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; deps = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']; \
open('/tmp/requirements.txt', 'w').write(chr(10).join(deps))" \
    && pip install -r /tmp/requirements.txt

# What serving never touches: torch's C++ headers, test suites and test binaries (~200 MB).
FROM deps AS slim
RUN site=/opt/venv/lib/python3.11/site-packages \
    && rm -rf "$site"/torch/test "$site"/torch/include "$site"/torch/share \
        "$site"/torch/lib/libtorchbind_test.so "$site"/torch/lib/libaoti_custom_ops.so \
    && find "$site"/torch/bin -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
    && pip uninstall -y -q pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin vitdigits
COPY --from=slim /opt/venv /opt/venv
WORKDIR /srv
COPY model/ model/
COPY app/ app/
COPY checkpoints/ /srv/checkpoints/
RUN chmod -R a+rX /srv/checkpoints
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIT_DIGITS_HOST=0.0.0.0 \
    VIT_DIGITS_PORT=8000 \
    VIT_DIGITS_WORKERS=2 \
    VIT_DIGITS_CHECKPOINTS=/srv/checkpoints
USER vitdigits
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('VIT_DIGITS_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "app"]

FROM deps AS train
# torchvision must match the torch build above (see README: Deploy).
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torchvision==${TORCHVISION_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torchvision==${TORCHVISION_VERSION}"; \
    fi \
    && pip install "timm>=1.0" "tqdm>=4.66" "matplotlib>=3.8"
WORKDIR /srv
COPY model/ model/
COPY training/ training/
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["python", "-m", "training"]
CMD ["ship", "--data-dir", "/data", "--download", "--output", "/srv/checkpoints/vit-digits.safetensors"]
