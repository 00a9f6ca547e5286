//! The normalizer: raw 1Password pages in, Panther-normalized and enriched records out.
//!
//! [`normalize`] is the single implementation of the record format, used by the service here
//! and by `oprelay normalize`; [`lookup`] is the in-memory UUID index. With the `files`
//! feature (the CLI's), `event_files` and `lookup_files` read the files operators normalize,
//! ingest and import; the service is built without them.

#[cfg(feature = "files")]
pub mod event_files;
mod live_lookups;
pub mod lookup;
#[cfg(feature = "files")]
pub mod lookup_files;
mod metrics;
pub mod normalize;
pub mod parts;
mod publish;
mod service;
mod shared_index;

pub use service::{run, run_with, NormalizerError, Options, DEFAULT_LISTEN, SERVICE};
