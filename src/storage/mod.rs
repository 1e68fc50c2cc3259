//! Where uploads live: rustus's on-disk layout, the info records, the data files and
//! the process-wide upload locks, a final's assembly from its parts, and (test builds
//! only) the storage fault hook.
pub mod assemble;
pub mod fault;
pub mod files;
pub mod info;
pub mod layout;
pub mod locks;
