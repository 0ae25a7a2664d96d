//! The ZooKeeper address, the one grammar every crate reads it with:
//! `h1:2181,h2/chroot` or `zk://[user:password@]h1,h2:2182/chroot`.
//!
//! - hosts are separated by commas; a host without a port gets [`DEFAULT_ZK_PORT`]; an IPv6
//!   host goes in brackets (`[::1]:2181`, `[fd00::2]`);
//! - the chroot (everything from the first `/`) is optional; a trailing `/` is dropped;
//! - `user:password@` before the hosts is a digest credential; it is never displayed
//!   ([`ZkAddress`]'s `Display` and `Debug`, [`ZkAddress::redact`]);
//! - the only scheme is `zk://` (any case).

use std::fmt;

/// The default ZooKeeper client port, added to hosts given without one.
pub const DEFAULT_ZK_PORT: u16 = 2181;

/// What to write instead, in every error.
const FORMS: &str = "write `host:port,host:port/chroot` or \
                     `zk://user:password@host:port,host:port/chroot`, an IPv6 host in brackets \
                     as `[::1]:2181`";

/// A parsed ZooKeeper address.
///
/// ```
/// use ochopod_core::ZkAddress;
/// let zk = ZkAddress::parse("zk://ops:s3cret@h1,[fd00::2]:2182/prod").unwrap();
/// assert_eq!(zk.hosts, ["h1:2181", "[fd00::2]:2182"]);
/// assert_eq!(zk.chroot.as_deref(), Some("/prod"));
/// assert_eq!(zk.auth, Some(("ops".to_string(), "s3cret".to_string())));
/// assert_eq!(zk.to_string(), "h1:2181,[fd00::2]:2182/prod");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ZkAddress {
    /// `host:port` entries, in the order given; a missing port is [`DEFAULT_ZK_PORT`]; IPv6
    /// hosts keep their brackets.
    pub hosts: Vec<String>,
    /// The chroot (`/path`, no trailing slash), if any.
    pub chroot: Option<String>,
    /// `(user, password)` from `user:password@`, if any (a digest credential; never publish it).
    pub auth: Option<(String, String)>,
}

/// Why an address does not parse; displays the address without its credentials, the reason,
/// and the forms to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad ZooKeeper address {shown:?}: {reason} ({FORMS})")]
pub struct ZkAddressError {
    /// The address as given, credentials removed ([`ZkAddress::redact`]).
    pub shown: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ZkAddress {
    /// Parses an address (see the [module](self) for the grammar); surrounding whitespace, and
    /// whitespace around each host, is ignored.
    pub fn parse(address: &str) -> Result<ZkAddress, ZkAddressError> {
        let bad = |reason: String| ZkAddressError {
            shown: ZkAddress::redact(address),
            reason,
        };
        let trimmed = address.trim();
        let rest = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("zk") => rest,
            Some((scheme, _)) => {
                return Err(bad(format!(
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
                    return Err(bad("credentials must be `user:password@`".into()));
                };
                if user.is_empty() {
                    return Err(bad("the user name before ':' is empty".into()));
                }
                (Some((user.to_string(), password.to_string())), hosts)
            }
            None => (None, authority),
        };
        if hosts_part.trim().is_empty() {
            return Err(bad("no host".into()));
        }
        let mut hosts = Vec::new();
        for entry in hosts_part.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(bad("empty host between commas".into()));
            }
            hosts.push(host_port(entry).map_err(bad)?);
        }
        let chroot = path.trim_end_matches('/');
        let chroot = if chroot.is_empty() {
            None
        } else if chroot.contains("//") {
            return Err(bad(format!(
                "bad chroot {chroot:?}: it holds an empty path segment"
            )));
        } else if chroot.chars().any(char::is_whitespace) {
            return Err(bad(format!("bad chroot {chroot:?}: it holds a space")));
        } else {
            Some(chroot.to_string())
        };
        Ok(ZkAddress {
            hosts,
            chroot,
            auth,
        })
    }

    /// The hosts as a ZooKeeper client takes them: `h1:2181,h2:2181`.
    pub fn hosts_string(&self) -> String {
        self.hosts.join(",")
    }

    /// The connection string without credentials: `h1:2181,h2:2181/chroot`.
    pub fn connect_string(&self) -> String {
        let mut s = self.hosts_string();
        if let Some(chroot) = &self.chroot {
            s.push_str(chroot);
        }
        s
    }

    /// `address` as written, minus `user:password@`: for logs, errors and what a pod
    /// publishes. Works on any text, parsable or not, so an error can show what was given.
    pub fn redact(address: &str) -> String {
        let (scheme, rest) = match address.split_once("://") {
            Some((scheme, rest)) => (&address[..scheme.len() + 3], rest),
            None => ("", address),
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rsplit_once('@') {
            Some((_, hosts)) => format!("{scheme}{hosts}{}", &rest[authority_end..]),
            None => address.to_string(),
        }
    }
}

impl std::str::FromStr for ZkAddress {
    type Err = ZkAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ZkAddress::parse(s)
    }
}

/// Displays the connection string, never the credentials.
impl fmt::Display for ZkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.connect_string())
    }
}

/// Shows the user, never the password.
impl fmt::Debug for ZkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkAddress")
            .field("hosts", &self.hosts)
            .field("chroot", &self.chroot)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .finish()
    }
}

/// `host[:port]` or `[v6][:port]` -> `host:port`.
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
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || ".:%".contains(c))
        {
            return Err(format!("bad IPv6 address in {entry:?}"));
        }
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (entry, None),
        };
        if host.contains(':') {
            return Err(format!(
                "{entry:?} looks like an IPv6 address: put it in brackets, e.g. [::1]:2181"
            ));
        }
        (host.to_string(), port)
    };
    if host.is_empty() {
        return Err(format!("no host name in {entry:?}"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(format!("bad host {host:?}"));
    }
    let port = match port {
        None => DEFAULT_ZK_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "bad port {p:?} of {host}: a number between 1 and 65535"
                ))
            }
        },
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user: &str, password: &str) -> Option<(String, String)> {
        Some((user.to_string(), password.to_string()))
    }

    #[test]
    fn addresses() {
        let table = [
            (
                "h1:2181,h2:2182/chroot",
                &["h1:2181", "h2:2182"][..],
                Some("/chroot"),
                None,
            ),
            (
                "zk://h1,h2/a/b/",
                &["h1:2181", "h2:2181"],
                Some("/a/b"),
                None,
            ),
            ("ZK://u:p@h1:1/x", &["h1:1"], Some("/x"), auth("u", "p")),
            ("127.0.0.1:2181", &["127.0.0.1:2181"], None, None),
            ("h1/", &["h1:2181"], None, None),
            (" h1:2181 , h2:2182/ ", &["h1:2181", "h2:2182"], None, None),
            // The password may hold ':' and '@': the last '@' ends it.
            (
                "zk://u:p:a@ss@h1:2181/a",
                &["h1:2181"],
                Some("/a"),
                auth("u", "p:a@ss"),
            ),
            // Credentials without the scheme, as `ochopod_zk` has always taken them.
            ("u:p@h1", &["h1:2181"], None, auth("u", "p")),
        ];
        for (input, hosts, chroot, creds) in table {
            let zk = ZkAddress::parse(input).unwrap();
            assert_eq!(zk.hosts, hosts, "{input}");
            assert_eq!(zk.chroot.as_deref(), chroot, "{input}");
            assert_eq!(zk.auth, creds, "{input}");
        }
    }

    #[test]
    fn ipv6_hosts_go_in_brackets() {
        let zk = ZkAddress::parse("zk://[::1]:2183,[fd00::2],h3/x/").unwrap();
        assert_eq!(zk.hosts, ["[::1]:2183", "[fd00::2]:2181", "h3:2181"]);
        assert_eq!(zk.hosts_string(), "[::1]:2183,[fd00::2]:2181,h3:2181");
        assert_eq!(zk.to_string(), "[::1]:2183,[fd00::2]:2181,h3:2181/x");
        let err = ZkAddress::parse("fd00::2:2181").unwrap_err().to_string();
        assert!(err.contains("put it in brackets"), "{err}");
    }

    #[test]
    fn bad_addresses_say_why_and_what_to_write() {
        for (input, why) in [
            ("", "no host"),
            ("zk:///x", "no host"),
            ("h1,,h2", "empty host between commas"),
            ("h1:0", "bad port"),
            ("h1:99999", "bad port"),
            ("h1:x/c", "bad port"),
            ("http://h1", "unknown scheme"),
            ("zk://user@h1", "user:password"),
            ("zk://:pw@h1", "user name"),
            ("h1//x", "empty path segment"),
            ("h1/a b", "holds a space"),
            ("[::1", "unclosed"),
            ("[::1]x", "after the IPv6 address"),
            ("[]:2181", "bad IPv6"),
            ("h 1:2181", "bad host"),
        ] {
            let err = ZkAddress::parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
            assert!(err.contains("zk://user:password@"), "{input}: {err}");
        }
    }

    #[test]
    fn credentials_never_show() {
        let zk = ZkAddress::parse("zk://ops:secretpw@h1/x").unwrap();
        assert_eq!(zk.to_string(), "h1:2181/x");
        let debug = format!("{zk:?}");
        assert!(
            !debug.contains("secretpw") && debug.contains("ops"),
            "{debug}"
        );
        let err = ZkAddress::parse("zk://ops:secretpw@h1:0/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secretpw"), "{err}");
        for (raw, shown) in [
            ("zk://u:pw@h1:2181,h2:2181/x", "zk://h1:2181,h2:2181/x"),
            ("u:pw@h1", "h1"),
            ("h1:2181/x@y", "h1:2181/x@y"),
            ("zk://h1", "zk://h1"),
        ] {
            assert_eq!(ZkAddress::redact(raw), shown, "{raw}");
        }
    }
}
