//! Helpers shared by the remote-shard integration tests.
pub mod data;
pub mod httpd;
