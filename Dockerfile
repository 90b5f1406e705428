# One image for every role of docker-compose.yml (deploy/entrypoint.sh): the one-shot init
# and enrol steps, the signer nodes, the coordinators, and HAProxy (Debian's package, the
# same 2.6 the tests run). Everything runs as uid 10001; no secret is in the image
# (.dockerignore keeps secrets/, governance/ and every data directory out of the context).
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 custody \
 # the mount points of the named volumes, owned by the service user: a new named volume
 # takes the ownership of the image's directory it is mounted on, so it starts writable
 && mkdir -p /srv/coordinator /srv/coordinator-2 /srv/node-1 /srv/node-2 /srv/node-3 /srv/pki /srv/lb \
             /srv/bootstrap \
 && chown -R 10001:10001 /srv \
 && chmod 0700 /srv/coordinator /srv/coordinator-2 /srv/node-1 /srv/node-2 /srv/node-3 /srv/pki /srv/lb \
               /srv/bootstrap

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
COPY deploy ./deploy

USER 10001:10001
# HAProxy's TLS port (the only one compose publishes); coordinators 7100, nodes 7101..7103
EXPOSE 8443 7100 7101 7102 7103
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
CMD ["coordinator"]
