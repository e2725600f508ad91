# Image of every VTO process (api, worker, relay, ingestor, projector, sweeper, migrate):
# `docker build -t vto:latest .`, then see infra/compose/compose.yaml.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY ledger ledger
COPY infra infra
COPY migrations migrations
COPY projections projections
COPY command_api command_api
COPY pipeline pipeline
COPY generator_worker generator_worker
COPY alembic.ini ./
RUN uv sync --frozen --no-dev && useradd --create-home vto && mkdir -p /data && chown vto /data
ENV PATH="/app/.venv/bin:$PATH" VTO_DATA_DIR=/data
USER vto
EXPOSE 8000
ENTRYPOINT ["vto"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
