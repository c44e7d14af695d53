# entitle operator image. Build: docker build -t entitle:dev .   (CI builds this file as is with
# buildah, on a locally made base: entitle.devenv.image; the real-node tests run it.)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY src ./src
# constraints.txt pins every runtime dependency: the same source builds the same image.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="entitle" \
      org.opencontainers.image.description="Kubernetes operator enforcing per-seat, per-instance and per-feature software entitlements" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/entitle-dev/entitle" \
      org.opencontainers.image.version="0.1.0"
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
