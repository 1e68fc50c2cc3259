//! Where uploads live: rustus's on-disk layout, the info records, the data files and
//! the process-wide upload locks.
pub mod assemble;
pub mod files;
pub mod info;
pub mod layout;
pub mod locks;
