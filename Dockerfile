# syntax=docker/dockerfile:1
# The Escalation Gate worker image (docker-compose.yml builds it as `escalation-gate`).
# The console script `escalation` is the entrypoint: `worker` by default, and
# `topics create`, `audit verify --topic`, ... as one-shot commands.

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
# Only what the wheel needs: the build context may hold a venv, broker data, caches.
COPY pyproject.toml README.md ./
COPY streams ./streams
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim-bookworm
RUN useradd --create-home --uid 10001 gate \
    && mkdir -p /var/lib/escalation-gate /etc/escalation-gate \
    && chown gate:gate /var/lib/escalation-gate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The policy is a governance document: shipped with the image, replaceable by a
# read-only mount over /etc/escalation-gate/policies.
COPY policies /etc/escalation-gate/policies
ENV PYTHONUNBUFFERED=1 \
    ESCALATION_POLICY_FILE=/etc/escalation-gate/policies/escalation-policy.yaml \
    ESCALATION_DATA_DIR=/var/lib/escalation-gate \
    ESCALATION_METRICS_ADDR=0.0.0.0 \
    ESCALATION_METRICS_PORT=9464
USER gate
WORKDIR /var/lib/escalation-gate
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('ESCALATION_METRICS_PORT', '9464'), timeout=4)"]
ENTRYPOINT ["escalation"]
CMD ["worker"]
