# syntax=docker/dockerfile:1
# Serin's image: a static binary (musl) on an empty base, run as a non-root user.
#
#   docker build -t serin:0.1.0 .
#
# The binary is installed twice by name: `serin` (the entrypoint) and `kubectl-serin`, the
# name kubectl looks for when it runs `kubectl serin ...` as a plugin.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# musl-dev: the C runtime that ring's assembly and C parts link against; ca-certificates:
# the trust store copied into the runtime image (webhook calls over HTTPS verify with it).
# Not pinned (DL3018): Alpine drops old package versions from its index, so a pin breaks
# the build within weeks; the Rust toolchain, which decides the binary, is pinned above.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# On Alpine the host target is *-linux-musl, which links statically by default.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin serin \
    && install -D -m 0755 target/release/serin /out/serin

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/serin /usr/local/bin/serin
COPY --from=build /out/serin /usr/local/bin/kubectl-serin
# The same numeric user as the Deployment's securityContext (manifests/deployment.yaml).
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/serin"]
CMD ["run"]
