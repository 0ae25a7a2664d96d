//! The `ochopod` crate documentation's example pod, as is.
include!("../../../../crates/ochopod/docs/web_pod.rs");
