//! ZooKeeper addresses (the type and its grammar are `ochopod_core::ZkAddress`) and the Mesos
//! agent's files that name the ensemble Mesos itself uses.

use std::path::Path;

pub use ochopod_core::{ZkAddress, DEFAULT_ZK_PORT};

use crate::Error;

/// Parses `h1:2181,h2/chroot` or `zk://user:password@h1,[fd00::2]:2182/chroot` with
/// [`ZkAddress::parse`], the one grammar of every crate; a bad address is
/// [`Error::InvalidZk`] (credentials removed).
///
/// ```
/// let zk = ochopod_bindings::parse_zk("zk://ops:s3cret@h1,h2:2182/prod").unwrap();
/// assert_eq!(zk.hosts, ["h1:2181", "h2:2182"]);
/// assert_eq!(zk.chroot.as_deref(), Some("/prod"));
/// assert_eq!(zk.auth, Some(("ops".to_string(), "s3cret".to_string())));
/// assert_eq!(zk.to_string(), "h1:2181,h2:2182/prod");
/// ```
pub fn parse_zk(url: &str) -> Result<ZkAddress, Error> {
    ZkAddress::parse(url).map_err(|e| Error::InvalidZk {
        url: e.shown,
        reason: e.reason,
    })
}

/// The Mesos agent's files that may name ZooKeeper, in the order they are tried.
pub const MESOS_ZK_FILES: [&str; 3] = [
    "/opt/mesosphere/etc/mesos-slave-common",
    "/opt/mesosphere/etc/mesos-slave",
    "/etc/mesos/zk",
];

/// The ZooKeeper hosts the Mesos agent uses, from the first of [`MESOS_ZK_FILES`] (under `root`)
/// that holds a `zk://` URL. Its path (Mesos's own chroot) and credentials are dropped: only the
/// hosts are ours to use. `Ok(None)` when no file names one. `/etc/mesos/zk` holds nothing but
/// that URL, so anything else in it is an error (the DC/OS files' `MESOS_MASTER` may name
/// masters without ZooKeeper: those are skipped).
pub(crate) async fn from_mesos_files(
    binding: &'static str,
    root: &Path,
) -> Result<Option<(ZkAddress, String)>, Error> {
    for file in MESOS_ZK_FILES {
        let path = root.join(file.trim_start_matches('/'));
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::platform(
                    binding,
                    format!("cannot read {}", path.display()),
                    &e,
                    "make it readable by the pod or set ochopod_zk",
                ))
            }
        };
        let fix =
            "write the Mesos agent's ZooKeeper there as zk://host:2181[,host:2181...]/mesos, \
                   or set ochopod_zk";
        let url = if file.ends_with("/zk") {
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            match line {
                Some(l) if !l.starts_with("zk://") => {
                    let shown: String = l.chars().take(60).collect();
                    return Err(Error::missing(
                        binding,
                        format!("{} holds {shown:?}, not a zk:// URL", path.display()),
                        fix,
                    ));
                }
                other => other,
            }
        } else {
            env_file_value(&text, "MESOS_MASTER")
        };
        let Some(url) = url.filter(|u| u.starts_with("zk://")) else {
            continue;
        };
        let mut zk = parse_zk(url).map_err(|e| Error::Missing {
            binding,
            what: format!(
                "{} holds an unusable ZooKeeper URL: {}",
                path.display(),
                match &e {
                    Error::InvalidZk { reason, .. } => reason.clone(),
                    other => other.to_string(),
                }
            ),
            fix: fix.to_string(),
        })?;
        zk.chroot = None;
        zk.auth = None;
        return Ok(Some((zk, file.to_string())));
    }
    Ok(None)
}

/// `KEY=value` from a systemd/shell environment file (`export`, quotes and comments allowed).
fn env_file_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(|c| c == '"' || c == '\''))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_are_invalid_zk_without_credentials() {
        let err = parse_zk("zk://ops:secretpw@h1:0").unwrap_err();
        let Error::InvalidZk { url, reason } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(url, "zk://h1:0");
        assert!(reason.contains("bad port"), "{reason}");
        let shown = err.to_string();
        assert!(shown.contains("zk://user:password@"), "{shown}");
        assert!(!shown.contains("secretpw"), "{shown}");
        assert_eq!(parse_zk("[::1]").unwrap().hosts, ["[::1]:2181"]);
    }

    #[test]
    fn env_files() {
        let text = "# comment\nexport MESOS_MASTER=\"zk://a:2181/mesos\"\nOTHER=1\n";
        assert_eq!(
            env_file_value(text, "MESOS_MASTER"),
            Some("zk://a:2181/mesos")
        );
        assert_eq!(env_file_value(text, "NOPE"), None);
    }
}
