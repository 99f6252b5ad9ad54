# syntax=docker/dockerfile:1
# Multi-stage build of the p100-recon binary.
# Stage 1 caches dependencies with cargo-chef; stage 2 builds the release binary;
# stage 3 is a slim Debian with only CA certificates and a non-root user.

FROM rust:1.95-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# aws-lc-rs (TLS) needs a C toolchain and cmake to build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY --from=planner /app/recipe.json recipe.json
# The patched sqlx-core (see vendor/README.md) is a path dependency the recipe refers to.
COPY vendor vendor
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin p100-recon

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin p100recon \
 && mkdir -p /var/lib/p100-recon/reports \
 && chown p100recon /var/lib/p100-recon/reports
COPY --from=builder /app/target/release/p100-recon /usr/local/bin/p100-recon
COPY jobs/schedule.toml /etc/p100-recon/schedule.toml
USER p100recon
WORKDIR /var/lib/p100-recon
ENV REPORT_DIR=/var/lib/p100-recon/reports \
    HTTP_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
# The operator console, when CONSOLE_TOKENS_FILE is mounted and CONSOLE_ADDR=0.0.0.0:8081 is set
# (it listens on loopback otherwise); publish it only behind a TLS proxy.
EXPOSE 8081
# Ready = every worker up and the database reachable (/readyz). The slim image has no curl:
# bash's /dev/tcp speaks the one request. Assumes the default HTTP_ADDR port.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# Migrations are embedded in the binary; run `p100-recon migrate` as a deploy step. Secrets:
# P100_API_KEY_FILE pointing at a mounted secret (docs/security.md), never P100_API_KEY.
ENTRYPOINT ["/usr/local/bin/p100-recon"]
CMD ["daemon", "--schedule", "/etc/p100-recon/schedule.toml"]
