# syntax=docker/dockerfile:1
# The `ferrisdb` binary in a small runtime image (docker-compose.yml builds it as
# ferrisdb:local). The crates.io registry and the target directory are BuildKit cache mounts,
# so compiled dependencies survive between builds and editing the sources recompiles only the
# workspace crates.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin ferrisdb \
    && install -m 0755 target/release/ferrisdb /usr/local/bin/ferrisdb

FROM debian:bookworm-slim AS runtime
# curl for healthchecks (`curl -fsS http://localhost:ADMIN/healthz`), CA roots for S3 over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ferrisdb \
    && useradd --system --uid 10001 --gid ferrisdb --home-dir /var/lib/ferrisdb \
        --shell /usr/sbin/nologin ferrisdb \
    && install -d -o ferrisdb -g ferrisdb -m 0700 /var/lib/ferrisdb /etc/ferrisdb
COPY --from=builder /usr/local/bin/ferrisdb /usr/local/bin/ferrisdb
USER 10001:10001
WORKDIR /var/lib/ferrisdb
# The compute's client port, then the admin ports (compute, safekeeper, pageserver) and the
# gRPC ports of safekeeper and pageserver, at their defaults.
EXPOSE 4500 4580 4501 4581 4510 4590
# Each component serves /healthz on its admin port; set the URL per container (compose does
# its own checks per service).
ENV FERRISDB_HEALTHCHECK_URL=http://127.0.0.1:4580/healthz
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=6 \
    CMD curl -fsS "$FERRISDB_HEALTHCHECK_URL" || exit 1
ENTRYPOINT ["ferrisdb"]
CMD ["--help"]
