//! Resumable Uploads for HTTP (draft-ietf-httpbis-resumable-upload), interop versions
//! 6 (drafts -04/-05) and 8 (drafts -09 to -11), as pure functions beside tus 1.0
//! ([`crate::tus`]): the structured fields the draft's header fields are
//! ([`fields`]), the protocol decisions and problem details ([`rules`]), the digest
//! fields of RFC 9530 ([`digest`]) and a creation's representation metadata
//! ([`metadata`]). The I/O shell is `server::draft`; the upload underneath is the same
//! one tus writes (the `.info` record, the data, the locks, the hooks).
pub mod digest;
pub mod fields;
pub mod metadata;
pub mod rules;
