# Codex Pooler's container image (README "Deployment"; compose.yaml builds and runs it).
# Two stages: `build` makes the project's wheel and every dependency's; the final stage
# installs them offline into a slim Python with no compiler, and runs as a non-root user.
# No Docker engine runs in this project's CI: tests/unit/test_deploy_files.py checks these
# rules statically and tests/integration/test_compose_contract.py runs the commands.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pooler ./pooler
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 pooler \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin pooler \
    && mkdir /data && chown 10001:10001 /data && chmod 0700 /data
# The wheels are bind-mounted from the build stage, so they are not a layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links /wheels codex-pooler
ENV CODEX_POOLER_DATA_DIR=/data \
    CODEX_POOLER_HOST=0.0.0.0 \
    CODEX_POOLER_HTTP_PORT=4000
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 4000
# Python's stdlib, as the slim image has no curl; any failure (refused, timeout, non-2xx)
# raises, so the exit status is non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CODEX_POOLER_HTTP_PORT', '4000') + '/healthz', timeout=4)"]
ENTRYPOINT ["pooler"]
CMD ["serve"]
