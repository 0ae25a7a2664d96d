//! What a binding is given ([`Ctx`]) and what it finds ([`Facts`]), with the [`Platform`] trait
//! every binding implements: shared by the dispatcher (`platform.rs`) and the bindings, which
//! depend on this module and never on the dispatcher.

use std::collections::BTreeMap;

use crate::zk::ZkAddress;
use crate::{Error, Options};

/// One platform: what it knows about the pod. Adding a platform means one more implementation.
pub(crate) trait Platform {
    /// The binding's name, as used in errors and in `Environment::binding`.
    fn name(&self) -> &'static str;
    /// What the platform says; `ctx` tells what was given already, so the platform may skip work.
    async fn facts(&self, ctx: &Ctx<'_>) -> Result<Facts, Error>;
}

/// What a binding is given.
pub(crate) struct Ctx<'a> {
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) opts: &'a Options,
    /// An ip was given (flag, spec or `ochopod_ip`): no need to look for one.
    pub(crate) ip_given: bool,
    /// A ZooKeeper address was given: no need to look for one.
    pub(crate) zk_given: bool,
    /// Kubernetes: the ZooKeeper Service, when given.
    #[allow(dead_code)] // read by the kubernetes binding only
    pub(crate) zk_service: Option<String>,
}

impl Ctx<'_> {
    pub(crate) fn var(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn hostname(&self) -> String {
        self.var("HOSTNAME").map(str::to_string).unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_string())
        })
    }
}

/// What a platform found.
#[derive(Default, Debug)]
pub(crate) struct Facts {
    pub(crate) ip: Option<String>,
    pub(crate) public: Option<String>,
    pub(crate) node: String,
    pub(crate) application: String,
    pub(crate) task: String,
    pub(crate) ports: BTreeMap<String, u16>,
    /// The platform's ZooKeeper and where it came from (for the log).
    pub(crate) zk: Option<(ZkAddress, String)>,
}

/// Maps a binding name to its static spelling (for errors).
pub(crate) fn static_name(name: &str) -> &'static str {
    crate::BINDINGS
        .iter()
        .find(|b| **b == name)
        .copied()
        .unwrap_or("unknown")
}
