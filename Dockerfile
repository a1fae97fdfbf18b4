# syntax=docker/dockerfile:1
#
# The `valora` image: one binary that runs `serve edge|auth|marketplace`,
# `migrate`, `apikey`, `users`, `audit` and the other commands.
#
#   docker build -t valora:0.1.0 .
#
# The runtime image contains the binary and nothing that writes: every
# process reads its settings from the environment and its certificates,
# keys and secrets from mounted files, so the container runs with a
# read-only root file system (VALORA_STATE_DIR is used by `valora dev`
# only).

# Build stage: the Rust release that Cargo.toml's rust-version names, on
# Debian 12 (bookworm), so the binary needs no newer glibc than the runtime
# image has. The protobuf compiler comes from the protoc-bin-vendored crate
# and ring compiles its C and assembly with the image's gcc, so no extra
# packages are installed.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between
# builds; the binary is copied out of the cached target folder because that
# folder is not part of the image. The release profile (Cargo.toml) uses
# fat LTO and one codegen unit.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --package valora --bin valora \
    && install -D -m 0755 target/release/valora /out/valora

# Runtime stage: distroless/cc on Debian 12. The binary links glibc,
# libgcc_s and libm dynamically, which this image contains, together with
# the CA certificates that webhook delivery verifies receivers against
# (reqwest uses rustls-platform-verifier, which loads the system's roots).
# It has no shell and no package manager. Its `nonroot` variant runs as UID and GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/valora /usr/local/bin/valora
USER 65532:65532
# Listeners keep their 127.0.0.1 defaults here: `VALORA_MARKETPLACE_ADDR`
# and `VALORA_AUTH_ADDR` are listen addresses for one command and target
# addresses for another, so the deployment sets every address explicitly
# (0.0.0.0:PORT for listeners in a pod).
ENV VALORA_CERTS_DIR=/etc/valora/certs \
    VALORA_LOG_FORMAT=json
# 8080: edge (gRPC, grpc-web). 50051: auth (mutual TLS). 50052: marketplace
# (mutual TLS). 9090: admin HTTP (/metrics, /healthz, /readyz).
EXPOSE 8080 50051 50052 9090
ENTRYPOINT ["valora"]
CMD ["--help"]
