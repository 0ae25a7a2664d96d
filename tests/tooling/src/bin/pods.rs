//! The `ochopod-http` crate documentation's example tool, as is.
include!("../../../../crates/ochopod-http/docs/pods_tool.rs");
