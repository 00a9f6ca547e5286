# One image with every oprelay binary: the four services, the `oprelay` CLI and `opsim`.
# Kubernetes picks the program with `command:` (deploy/k8s).
#
#   docker build --build-arg OPRELAY_REVISION=$(git rev-parse --short=12 HEAD) -t oprelay .
#   docker run --rm oprelay oprelay --version
#
# `just image` builds the same image without Docker or any registry (scripts/image.sh:
# buildah from scratch, the same binaries, libraries, user, environment and labels).

FROM rust:1-bookworm AS build
# The source revision for `--version` and oprelay_build_info (.git is not in the context).
ARG OPRELAY_REVISION=unknown
ENV OPRELAY_REVISION=${OPRELAY_REVISION}
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
ARG OPRELAY_REVISION=unknown
LABEL org.opencontainers.image.title=oprelay \
      org.opencontainers.image.description="1Password Events API to SIEM pipeline" \
      org.opencontainers.image.version=0.1.0 \
      org.opencontainers.image.revision=${OPRELAY_REVISION} \
      org.opencontainers.image.source=https://github.com/oprelay/oprelay \
      org.opencontainers.image.licenses=Apache-2.0
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENV OPRELAY_CONFIG=/etc/oprelay/oprelay.toml \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT []
CMD ["/usr/local/bin/oprelay", "--help"]
