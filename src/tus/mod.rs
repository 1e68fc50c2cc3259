//! The tus 1.0 protocol as pure functions over header values and upload state.
pub mod checksum;
pub mod concat;
pub mod cors;
pub mod expiry;
pub mod getting;
pub mod metadata;
pub mod routes;
pub mod rules;
