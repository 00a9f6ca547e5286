//! Which build this is: the release version and the source revision, for `--version` on every
//! binary and the `oprelay_build_info{version,revision} 1` metric, so an on-call engineer can
//! tell from a pod's metrics which code it runs.

/// The release, from the workspace's `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The source revision (`git rev-parse --short=12 HEAD` at build time, or `OPRELAY_REVISION`).
pub const REVISION: &str = env!("OPRELAY_REVISION");

/// What `--version` prints after the program's name: `0.1.0 (1a2b3c4d5e6f)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OPRELAY_REVISION"),
    ")"
);
