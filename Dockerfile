# syntax=docker/dockerfile:1
# The project image: the `search` command line with torch, Ray, Optuna, optuna-dashboard
# and the Postgres driver. Used by every service of docker-compose.yml but postgres.
#
#   docker build -t resnet-budget-search .
#
# torch comes from the CUDA 12.6 wheel index by default (it runs on a CPU too, only
# larger). A CPU-only image, several GB smaller, for machines without an NVIDIA GPU:
#
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu \
#       -t resnet-budget-search:cpu .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Not root: uid 1000 must be able to read the secret files (see secrets/README.md).
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin search \
    && mkdir -p /work/runs /home/search/.cache \
    && chown search:search /work /work/runs /home/search/.cache

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ARG TORCH_VERSION=2.13.0

# torch first, from its own index, so that the project's `torch` requirement is already
# met and pip does not fetch another build of it from PyPI.
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

# The dependencies alone, from pyproject.toml and empty packages: this layer is rebuilt
# when pyproject.toml changes, not on every source edit.
WORKDIR /src
COPY pyproject.toml ./
RUN mkdir search space models trainers \
    && touch README.md search/__init__.py space/__init__.py models/__init__.py \
        trainers/__init__.py \
    && pip install . \
    && pip uninstall --yes resnet-budget-search \
    && rm -rf README.md search space models trainers build ./*.egg-info

# The project itself.
COPY README.md ./
COPY search/ search/
COPY space/ space/
COPY models/ models/
COPY trainers/ trainers/
RUN pip install --no-deps . && cd / && rm -rf /src

COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/entrypoint.sh

USER search
WORKDIR /work
# Study stores (SQLite), promoted runs and reports; a named volume in docker-compose.yml.
VOLUME ["/work/runs"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["search", "--help"]
