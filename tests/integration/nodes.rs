//! Several nodes: two tusring daemons on two ports sharing one Redis (records and
//! locks) and one data directory.
