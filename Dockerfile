# One image for every role of the topology: the coordinator (`python -m api serve`) and the
# signer nodes (`python -m signer_nodes run`); see docker-compose.yml.
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 custody

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mpc ./mpc
COPY hsm ./hsm
COPY custody ./custody
COPY api ./api
COPY signer-nodes ./signer-nodes
COPY payments ./payments
COPY simulations ./simulations
RUN pip install --no-cache-dir .

USER custody
# Coordinator API port; nodes listen on 7101..7103 (same numbering as `custody up`).
EXPOSE 7100 7101 7102 7103
CMD ["python", "-m", "api", "serve", "--data-dir", "/data", "--host", "0.0.0.0", "--port", "7100"]
