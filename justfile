# oprelay developer commands. `./dev <recipe>` installs what is missing and runs one of these.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Formatting, lints, and every test against a real nats-server.
test:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings
    cargo test --workspace

# The local demo: the 1Password simulator with a backfill and a live stream.
demo:
    cargo build --release --quiet -p opsim
    scripts/demo.sh

# Format the code.
fmt:
    cargo fmt --all

# Every benchmark; each prints its own figures.
bench: bench-fetcher

# Fetcher backfill throughput and CPU per 100 000 events (opsim with rate limits off).
bench-fetcher:
    cargo build --release --quiet -p oprelay-fetcher
    cargo bench --quiet -p oprelay-fetcher --bench fetch
