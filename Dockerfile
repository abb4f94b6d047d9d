# One image for every resplit service. Pick the service with the command:
#   docker run --rm resplit:dev python -m services.monitor --host 0.0.0.0
# docker-compose.yml runs the whole cluster (Redis, four control services,
# edge and cloud workers) from this image.
FROM python:3.11-slim

# torch is installed on its own, first, pinned. From plain PyPI this pin
# resolves to the large CUDA build of torch. To get the much smaller CPU
# build, point pip at a CPU wheel index with the PIP_EXTRA_INDEX_URL build
# arg (and, if that index labels its wheels, e.g. TORCH_SPEC=torch==2.13.0+cpu):
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<cpu wheel index> -t resplit:dev .
# Build args are visible to pip as environment variables during the build only.
ARG TORCH_SPEC="torch==2.13.0"
ARG PIP_EXTRA_INDEX_URL

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 resplit \
 && useradd --system --uid 10001 --gid resplit --create-home --home-dir /home/resplit resplit

# Layer 1: torch (largest, changes least).
COPY requirements.lock /tmp/requirements.lock
RUN pip install -c /tmp/requirements.lock "${TORCH_SPEC}"

# Layer 2: the project's runtime dependencies, read from pyproject.toml alone and
# held to the versions the suite passed with (requirements.lock), so editing code
# does not reinstall them. No dev extras.
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -c requirements.lock -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Layer 3: the code itself (packages resplit* and services*).
COPY resplit ./resplit
COPY services ./services
COPY protos ./protos
COPY tools ./tools
RUN pip install --no-deps . \
 && pip check \
 && rm -rf build ./*.egg-info

USER resplit
WORKDIR /home/resplit

# gRPC ports: monitor, orchestrator, splitter, broadcaster, gateway, worker; the
# gateway's OpenAI API; then the HTTP side ports (/healthz, /metrics). Documentation only.
EXPOSE 50051 50052 50053 50054 50055 50060 8000 9101 9102 9103 9104 9105 9160

CMD ["resplit", "--help"]
