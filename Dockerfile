# The vit-digits serving image: on CPU, without torch. Each model runs from its ONNX export with ONNX
# Runtime; the Python packages come from requirements/serve.lock (pinned, hashes checked).
#
#   docker build -t vit-digits .
#
# Dockerfile.gpu adds torch to this image (serving on an NVIDIA GPU); Dockerfile.train is the
# training stack. They are separate files so that building this one never builds theirs.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS serve-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
# Only the lock file: editing code does not invalidate this layer. --no-deps: the lock is complete.
COPY requirements/serve.lock /tmp/serve.lock
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/serve.lock

# What serving never runs: the installer (nothing installs at run time), test suites, and ONNX
# Runtime's offline tools (model conversion, quantisation, transformer graph optimisation) and
# NumPy's Fortran wrapper generator; ~45 MB. The packages' own extension modules lose their symbol
# tables (strip --strip-unneeded, 74 -> 58 MB; the bundled *.libs are left as they are).
FROM serve-deps AS serve-venv
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
    && find /opt/venv/lib -name '*.so' -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
    && rm -rf /var/lib/apt/lists/*
RUN site=/opt/venv/lib/python3.11/site-packages \
    && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools \
    && find "$site" -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization "$site"/onnxruntime/tools \
        "$site"/onnxruntime/datasets "$site"/numpy/f2py "$site"/numpy/distutils /opt/venv/bin/f2py \
        /opt/venv/bin/onnxruntime_test

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
    VIT_DIGITS_CHECKPOINTS=/srv/checkpoints \
    ORT_DISABLE_TELEMETRY=1
USER vitdigits
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('VIT_DIGITS_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "app"]
