# One image for every resplit service. Pick the service with the command:
#   docker run --rm resplit:dev python -m services.monitor --host 0.0.0.0
# docker-compose.yml runs the whole cluster (Redis, four control services,
# edge and cloud workers) from this image.
#
# Two stages: `build` installs everything into a virtual environment (/opt/venv),
# the runtime stage copies that environment alone onto a fresh base: no pip cache,
# no build files, no CA bundle given for the build.
#
# BASE_IMAGE: any image with Python 3.11 and its venv module. The default is the
# official slim image; where Docker Hub cannot be reached, `make image` makes a base
# from Debian's packages (debootstrap, tools/base_image.sh) and passes it here.
#
# torch is installed on its own, first, pinned. From plain PyPI this pin
# resolves to the large CUDA build of torch (the GPU image: build it on an NVIDIA
# CUDA base, docs/KUBERNETES.md). For the much smaller CPU build, point pip at a CPU
# wheel index with the PIP_EXTRA_INDEX_URL build arg (and, if that index labels its
# wheels, e.g. TORCH_SPEC=torch==2.13.0+cpu), or put the wheel in ./wheels/ (any
# wheel there is preferred: `make image` copies the CPU torch it finds):
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<cpu wheel index> -t resplit:dev .
# A package index behind a TLS-intercepting proxy: put its CA bundle in
# ./ca-bundle.crt (gitignored; `make image` does, from pip's own `cert` setting).
# Build args are visible to pip as environment variables during the build only.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_SPEC="torch==2.13.0"
ARG PIP_EXTRA_INDEX_URL

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_FIND_LINKS=/tmp/build/wheels \
    PATH=/opt/venv/bin:$PATH

# Optional inputs, present or not: the CA bundle and local wheels (the Dockerfile is
# named so that the COPY always has a source).
COPY Dockerfile ca-bundle.crt* /tmp/build/
COPY Dockerfile wheels* /tmp/build/wheels/
RUN python3 -m venv /opt/venv \
 && if [ -f /tmp/build/ca-bundle.crt ]; then echo "PIP_CERT=/tmp/build/ca-bundle.crt" > /tmp/build/env; fi

# Layer 1: torch (largest, changes least).
COPY requirements.lock /tmp/requirements.lock
RUN set -a; [ ! -f /tmp/build/env ] || . /tmp/build/env; set +a; \
    pip install -c /tmp/requirements.lock "${TORCH_SPEC}"

# Layer 2: the project's runtime dependencies, read from pyproject.toml alone and
# held to the versions the suite passed with (requirements.lock), so editing code
# does not reinstall them. No dev extras.
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
RUN set -a; [ ! -f /tmp/build/env ] || . /tmp/build/env; set +a; \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -c requirements.lock -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Layer 3: the code itself (packages resplit* and services*).
COPY resplit ./resplit
COPY services ./services
COPY protos ./protos
COPY tools ./tools
RUN set -a; [ ! -f /tmp/build/env ] || . /tmp/build/env; set +a; \
    pip install -c requirements.lock --no-deps . \
 && pip check

# The native CPU kernels (resplit/kernels), built here with this stage's compiler into
# the environment: the runtime stage has no compiler, and a worker that cannot build
# them runs torch's slower kernels. The library's name carries the sources' hash, so the
# workers find this one; the build fails here if the kernels do not build.
ENV RESPLIT_KERNEL_CACHE=/opt/venv/share/resplit/kernels
RUN if ! command -v cc >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python -c "from resplit.kernels import native; assert native.library() is not None; print(native.describe())"

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    RESPLIT_KERNEL_CACHE=/opt/venv/share/resplit/kernels

RUN groupadd --system --gid 10001 resplit \
 && useradd --system --uid 10001 --gid resplit --create-home --home-dir /home/resplit resplit
COPY --from=build /opt/venv /opt/venv

USER resplit
WORKDIR /home/resplit

# gRPC ports: monitor, orchestrator, splitter, broadcaster, gateway, worker; the
# gateway's OpenAI API; then the HTTP side ports (/healthz, /metrics). Documentation only.
EXPOSE 50051 50052 50053 50054 50055 50060 8000 9101 9102 9103 9104 9105 9160

CMD ["resplit", "--help"]
