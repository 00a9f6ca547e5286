//! The normalizer: raw 1Password pages in, Panther-normalized and enriched records out.
//!
//! [`normalize`] is the single implementation of the record format, used by the service here
//! and by `oprelay normalize`; [`lookup`] is the in-memory UUID index; [`lookup_files`] reads the
//! lookup files operators import.

pub mod event_files;
mod live_lookups;
pub mod lookup;
pub mod lookup_files;
mod metrics;
pub mod normalize;
pub mod parts;
mod publish;
mod service;

pub use service::{run, run_with, NormalizerError, Options, DEFAULT_LISTEN, SERVICE};
