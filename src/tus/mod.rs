//! The tus 1.0 protocol as pure functions over header values and upload state.
pub mod checksum;
pub mod cors;
pub mod getting;
pub mod metadata;
pub mod routes;
pub mod rules;
