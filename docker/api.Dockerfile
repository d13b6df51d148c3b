# syntax=docker/dockerfile:1
# optbench API image: FastAPI + Alembic migrations. No torch here (`pip install .`
# installs only the base dependencies; torch lives in the `[worker]` extra).
#
#   docker build -f docker/api.Dockerfile -t optbench-api .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPTBENCH_HOME=/var/lib/optbench

# psycopg[binary] bundles libpq, so no apt packages are needed.
RUN groupadd --system --gid 10001 optbench \
 && useradd --system --uid 10001 --gid optbench --home-dir /var/lib/optbench \
      --no-create-home --shell /usr/sbin/nologin optbench \
 && mkdir -p /var/lib/optbench \
 && chown optbench:optbench /var/lib/optbench

WORKDIR /app
COPY . /app
RUN pip install .

USER optbench
EXPOSE 8000
CMD ["optbench", "api", "--host", "0.0.0.0", "--port", "8000"]
