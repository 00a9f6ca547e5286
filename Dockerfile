# One image with every oprelay binary: the four services, the `oprelay` CLI and `opsim`.
# Kubernetes picks the program with `command:` (deploy/k8s).
#
#   docker build -t oprelay .
#   docker run --rm oprelay oprelay --help

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p oprelay-fetcher -p oprelay-normalizer -p oprelay-forwarder -p oprelay-healthwatch \
      -p oprelay-ctl -p opsim \
 && mkdir -p /out \
 && cp target/release/oprelay-fetcher target/release/oprelay-normalizer \
       target/release/oprelay-forwarder target/release/oprelay-healthwatch \
       target/release/oprelay target/release/opsim /out/

# distroless: glibc, CA certificates and a nonroot user; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENV OPRELAY_CONFIG=/etc/oprelay/oprelay.toml
ENTRYPOINT []
CMD ["/usr/local/bin/oprelay", "--help"]
