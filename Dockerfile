# celador's image: the release binary on a minimal, non-root base.
#
#   docker build -t ghcr.io/celador-dev/celador:0.1.0 .
#
# The chart and k8s/ run /usr/local/bin/celador as user 65532 with a
# read-only root filesystem; tests/kubernetes.rs checks that they and this
# file agree (this machine has no container engine to build it).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The manifest first, so the dependencies are a cached layer of their own.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY crates crates
COPY benches benches
COPY tests tests
COPY proto proto
RUN cargo build --release --locked --bin celador \
 && cp target/release/celador /celador

# glibc and libgcc, no shell, no package manager; "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /celador /usr/local/bin/celador
USER 65532:65532
# ext_authz gRPC (loopback), gRPC health, admin (/healthz, /readyz, /metrics),
# and the injector's HTTPS.
EXPOSE 9191 9192 9901 8443
ENTRYPOINT ["/usr/local/bin/celador"]
CMD ["--help"]
