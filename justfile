# oprelay developer commands. `./dev <recipe>` installs what is missing and runs one of these.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Formatting, lints, and every test against a real nats-server.
test:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings
    cargo test --workspace

# The bus, cluster and end-to-end tests on every supported nats-server (scripts/nats-versions).
test-nats-matrix:
    #!/usr/bin/env bash
    set -euo pipefail
    for version in $(grep -v '^#' scripts/nats-versions); do
      echo "== nats-server $version"
      NATS_SERVER_BIN="$PWD/target/nats/$version/bin/nats-server" \
        cargo test --quiet -p oprelay-bus -p oprelay-e2e
    done

# The local demo: the whole pipeline against the 1Password simulator, into a file sink.
demo:
    cargo build --release --quiet -p opsim -p oprelay-fetcher -p oprelay-normalizer -p oprelay-forwarder -p oprelay-healthwatch -p oprelay-ctl -p oprelay-testkit
    scripts/demo.sh

# Format the code.
fmt:
    cargo fmt --all

# Regenerate the JSON Schemas generated from the `events` types (docs/schemas/).
schemas:
    OPRELAY_UPDATE_SCHEMAS=1 cargo test --quiet -p oprelay-events --test schemas generated

# Every benchmark; each prints its own figures.
bench: bench-fetcher bench-normalizer bench-forwarder bench-cli bench-e2e

# Fetcher backfill throughput, CPU per 100 000 events, peak RSS and RSS once caught up (opsim
# with rate limits off).
bench-fetcher:
    cargo build --release --quiet -p oprelay-fetcher
    cargo bench --quiet -p oprelay-fetcher --bench fetch

# Normalizer hot path against the serde_json floor, and the 100 000-row lookup index's memory.
bench-normalizer:
    cargo bench --quiet -p oprelay-normalizer --bench normalize

# Forwarder throughput to a file sink, a local HTTP receiver and a local Splunk HEC receiver; CPU
# per 100 000 records, peak RSS and RSS after the burst.
bench-forwarder:
    cargo build --release --quiet -p oprelay-forwarder
    cargo bench --quiet -p oprelay-forwarder --bench forward

# `oprelay normalize` as a whole process: 1 000 000 item usages, a 100 000-row lookup file.
bench-cli:
    cargo build --release --quiet -p oprelay-ctl
    cargo bench --quiet -p oprelay-ctl --bench normalize_file

# The whole pipeline, release binaries as processes, 1 008 000 events (4 accounts) into a file sink,
# over NATS with authorization and TLS. `just bench-e2e 3`: on a 3-node JetStream cluster;
# `just bench-e2e 1 2`: scaled out, two normalizers and two forwarders.
bench-e2e nodes="1" replicas="1":
    cargo build --release --quiet -p oprelay-fetcher -p oprelay-normalizer -p oprelay-forwarder -p oprelay-healthwatch -p oprelay-ctl
    # On tmpfs: the run writes ~3 GB (two copies in JetStream, one in the sink); a disk makes it
    # measure the disk. Override with OPRELAY_BENCH_TMPDIR.
    TMPDIR="${OPRELAY_BENCH_TMPDIR:-/dev/shm}" BENCH_NATS_NODES={{nodes}} BENCH_REPLICAS={{replicas}} cargo bench --quiet -p oprelay-e2e --bench pipeline

# The OCI image, built here without Docker or a registry (buildah from scratch), then checked.
image tag="":
    scripts/image.sh {{tag}}

# Coverage-guided fuzzing of the page parser and normalizer (libFuzzer via cargo-fuzz).
fuzz seconds="60":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run normalize_page -- -max_total_time={{seconds}}
