//! ZooKeeper addresses: `h1:2181,h2/chroot`, `zk://user:password@h1,h2:2182/chroot`, and the
//! Mesos agent's files that name the ensemble Mesos itself uses.

use std::fmt;
use std::path::Path;

use crate::Error;

/// The default ZooKeeper client port, added to hosts given without one.
pub const DEFAULT_ZK_PORT: u16 = 2181;

/// A parsed ZooKeeper address.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ZkAddress {
    /// `host:port` entries, in the order given; a missing port is [`DEFAULT_ZK_PORT`].
    pub hosts: Vec<String>,
    /// The chroot (`/path`, no trailing slash), if any.
    pub chroot: Option<String>,
    /// `user:password` from the URL, if any (a digest credential; never publish it).
    pub auth: Option<(String, String)>,
}

impl ZkAddress {
    /// The connection string without credentials: `h1:2181,h2:2181/chroot`.
    pub fn connect_string(&self) -> String {
        let mut s = self.hosts.join(",");
        if let Some(chroot) = &self.chroot {
            s.push_str(chroot);
        }
        s
    }
}

/// Displays the connection string, never the credentials.
impl fmt::Display for ZkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.connect_string())
    }
}

/// Parses `h1:2181,h2/chroot` or `zk://user:password@h1,h2:2182/chroot`.
///
/// ```
/// let zk = ochopod_bindings::parse_zk("zk://ops:s3cret@h1,h2:2182/prod").unwrap();
/// assert_eq!(zk.hosts, ["h1:2181", "h2:2182"]);
/// assert_eq!(zk.chroot.as_deref(), Some("/prod"));
/// assert_eq!(zk.auth, Some(("ops".to_string(), "s3cret".to_string())));
/// assert_eq!(zk.to_string(), "h1:2181,h2:2182/prod");
/// ```
pub fn parse_zk(url: &str) -> Result<ZkAddress, Error> {
    let bad = |reason: &str| Error::InvalidZk {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = url.trim();
    let rest = match trimmed.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("zk") => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "unknown scheme {scheme:?} (only zk:// is understood)"
            )))
        }
        None => trimmed,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (auth, hosts_part) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let Some((user, password)) = userinfo.split_once(':') else {
                return Err(bad("credentials must be user:password"));
            };
            if user.is_empty() {
                return Err(bad("the user name before ':' is empty"));
            }
            (Some((user.to_string(), password.to_string())), hosts)
        }
        None => (None, authority),
    };
    let mut hosts = Vec::new();
    for entry in hosts_part.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(bad("empty host in the list"));
        }
        hosts.push(host_port(entry).map_err(|reason| bad(&reason))?);
    }
    let chroot = path.trim_end_matches('/');
    let chroot = if chroot.is_empty() {
        None
    } else if chroot.contains("//") {
        return Err(bad("the chroot contains an empty path segment"));
    } else {
        Some(chroot.to_string())
    };
    Ok(ZkAddress {
        hosts,
        chroot,
        auth,
    })
}

fn host_port(entry: &str) -> Result<String, String> {
    let (host, port) = if let Some(v6) = entry.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or(format!("unclosed '[' in {entry:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after the IPv6 address")),
        };
        (format!("[{addr}]"), port)
    } else {
        match entry.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (entry.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("no host name in {entry:?}"));
    }
    let port = match port {
        None => DEFAULT_ZK_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "port {p:?} of {host} is not a number between 1 and 65535"
                ))
            }
        },
    };
    Ok(format!("{host}:{port}"))
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
    fn plain_lists_get_default_ports() {
        let zk = parse_zk("10.0.0.1,10.0.0.2:2182").unwrap();
        assert_eq!(zk.hosts, ["10.0.0.1:2181", "10.0.0.2:2182"]);
        assert_eq!(zk.chroot, None);
        assert_eq!(zk.auth, None);
    }

    #[test]
    fn ipv6_hosts() {
        let zk = parse_zk("zk://[::1]:2183,[fd00::2]/x/").unwrap();
        assert_eq!(zk.hosts, ["[::1]:2183", "[fd00::2]:2181"]);
        assert_eq!(zk.chroot.as_deref(), Some("/x"));
    }

    #[test]
    fn bad_addresses_say_why() {
        for (url, needle) in [
            ("", "empty host"),
            ("h1,,h2", "empty host"),
            ("h1:99999", "not a number"),
            ("http://h1", "unknown scheme"),
            ("zk://user@h1", "user:password"),
            ("zk://h1//a", "empty path segment"),
        ] {
            let err = parse_zk(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(err.contains("zk://user:password@"), "{err}");
        }
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
