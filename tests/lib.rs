//! Workspace-level end-to-end tests live in `tests/*.rs` of this package; they run the real
//! binaries as separate processes.
