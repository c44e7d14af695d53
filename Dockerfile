# entitle operator image. Not built in this repository's CI (no container engine there);
# kept correct by reading. Build: docker build -t entitle:dev .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin entitle \
 && mkdir -p /var/lib/entitle && chown 65532:65532 /var/lib/entitle
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# 9443 webhook (TLS), 8080 metrics, 8081 liveness (ENTITLE_LIVENESS=http://0.0.0.0:8081/healthz)
EXPOSE 9443 8080 8081
VOLUME ["/var/lib/entitle"]
ENTRYPOINT ["entitle"]
# The Helm chart mounts its ConfigMap here (charts/entitle/templates/deployment.yaml).
CMD ["run", "--config", "/etc/entitle/config/config.yaml"]
