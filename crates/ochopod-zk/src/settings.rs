//! Connection settings: the connection string (hosts, chroot, inline credentials), the session
//! timeout and digest auth, and the ACLs our nodes get.

use std::time::Duration;

use zookeeper_client::{Acl, Acls, AuthId, Client, CreateMode, Permission};

use ochopod_core::ZkAddress;

use crate::Error;

/// How to reach ZooKeeper.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkSettings {
    /// `h1:2181,h2:2181/chroot` or `zk://[user:password@]h1:2181,h2/chroot`, read by
    /// [`ZkAddress`] (port 2181 when omitted, IPv6 hosts in brackets; the chroot is optional
    /// and created when missing). Inline `user:password` means digest auth, as
    /// `auth = "digest:user:password"` does.
    pub connect: String,
    /// The session timeout asked of the server (clamped by it to [2, 20] x tickTime by default).
    pub session_timeout: Duration,
    /// Optional auth, `scheme:credentials`, e.g. `digest:user:password`. Wins over inline
    /// credentials. With auth, the cluster's nodes get ACLs "creator: all, world: read".
    pub auth: Option<String>,
}

impl std::fmt::Debug for ZkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("ZkSettings")
            .field("connect", &ZkAddress::redact(&self.connect))
            .field("session_timeout", &self.session_timeout)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ZkSettings {
    /// Settings for `connect` with a session timeout and no auth.
    pub fn new(connect: impl Into<String>, session_timeout: Duration) -> Self {
        ZkSettings {
            connect: connect.into(),
            session_timeout,
            auth: None,
        }
    }
}

/// Validated settings.
#[derive(Clone)]
pub(crate) struct Target {
    /// `h1:2181,h2:2181`, no chroot.
    pub(crate) hosts: String,
    /// `""` or `/chroot` (no trailing slash).
    pub(crate) chroot: String,
    /// `(scheme, credentials)`.
    pub(crate) auth: Option<(String, Vec<u8>)>,
    pub(crate) session_timeout: Duration,
}

impl Target {
    pub(crate) fn parse(settings: &ZkSettings) -> Result<Target, Error> {
        let address =
            ZkAddress::parse(&settings.connect).map_err(|e| Error::Input(e.to_string()))?;
        let inline_auth = address
            .auth
            .as_ref()
            .map(|(user, password)| format!("{user}:{password}"));
        let auth = match settings.auth.as_deref().map(str::trim) {
            Some(a) if !a.is_empty() => Some(parse_auth(a)?),
            _ => inline_auth.map(|c| ("digest".to_string(), c.into_bytes())),
        };
        if settings.session_timeout.is_zero() {
            return Err(Error::Input(
                "the ZooKeeper session timeout is zero: give it a few seconds (e.g. 5)".into(),
            ));
        }
        Ok(Target {
            hosts: address.hosts_string(),
            chroot: address.chroot.unwrap_or_default(),
            auth,
            session_timeout: settings.session_timeout,
        })
    }

    /// Connects, creates the chroot when missing and returns a client rooted there.
    pub(crate) async fn connect(&self) -> Result<Client, Error> {
        // A connection timeout of 3/5 of the session stretches the client's internal tick from
        // session/20 to 3*session/40: fewer idle wake-ups (and pings), same expiry semantics.
        let mut connector = Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_connection_timeout(self.session_timeout * 3 / 5);
        if let Some((scheme, creds)) = &self.auth {
            connector = connector.with_auth(scheme, creds);
        }
        let client = connector
            .connect(&self.hosts)
            .await
            .map_err(Error::zk("connect", self.hosts.clone()))?;
        if self.chroot.is_empty() {
            return Ok(client);
        }
        match client
            .mkdir(
                &self.chroot,
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
        {
            Ok(()) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(e) => return Err(Error::zk("mkdir", self.chroot.clone())(e)),
        }
        client.chroot(self.chroot.clone()).map_err(|_| {
            Error::Input(format!(
                "bad chroot {:?} in the ZooKeeper connection string",
                self.chroot
            ))
        })
    }

    /// ACLs of the cluster's nodes: open without auth; "creator all, world read" with auth, so
    /// other ZooKeeper users can read but neither change nor delete them.
    pub(crate) fn cluster_acls(&self) -> Vec<Acl> {
        if self.auth.is_some() {
            vec![
                Acl::new(Permission::ALL, AuthId::authed()),
                Acl::new(Permission::READ, AuthId::anyone()),
            ]
        } else {
            vec![Acl::new(Permission::ALL, AuthId::anyone())]
        }
    }
}

fn parse_auth(auth: &str) -> Result<(String, Vec<u8>), Error> {
    match auth.split_once(':') {
        Some((scheme, creds)) if !scheme.is_empty() && !creds.is_empty() => {
            if scheme == "digest" && !creds.contains(':') {
                return Err(Error::Input(
                    "bad ZooKeeper auth: digest credentials are `digest:user:password`".into(),
                ));
            }
            Ok((scheme.to_string(), creds.as_bytes().to_vec()))
        }
        _ => Err(Error::Input(
            "bad ZooKeeper auth: write `scheme:credentials`, e.g. `digest:user:password`".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(connect: &str, auth: Option<&str>) -> Result<Target, Error> {
        Target::parse(&ZkSettings {
            connect: connect.into(),
            session_timeout: Duration::from_secs(5),
            auth: auth.map(str::to_string),
        })
    }

    #[test]
    fn connection_strings() {
        let table = [
            ("h1:2181,h2:2182/chroot", "h1:2181,h2:2182", "/chroot", None),
            ("zk://h1,h2/a/b/", "h1:2181,h2:2181", "/a/b", None),
            (
                "zk://u:p@h1:1/x",
                "h1:1",
                "/x",
                Some(("digest", b"u:p".to_vec())),
            ),
            ("127.0.0.1:2181", "127.0.0.1:2181", "", None),
            ("h1/", "h1:2181", "", None),
            (
                "[::1]:2183,[fd00::2]/x",
                "[::1]:2183,[fd00::2]:2181",
                "/x",
                None,
            ),
        ];
        for (input, hosts, chroot, auth) in table {
            let t = parse(input, None).unwrap();
            assert_eq!(t.hosts, hosts, "{input}");
            assert_eq!(t.chroot, chroot, "{input}");
            assert_eq!(
                t.auth,
                auth.map(|(s, c): (&str, Vec<u8>)| (s.to_string(), c)),
                "{input}"
            );
        }
        let t = parse("zk://u:p@h1/x", Some("digest:a:b")).unwrap();
        assert_eq!(t.auth, Some(("digest".into(), b"a:b".to_vec())));
    }

    #[test]
    fn bad_settings_are_explained() {
        for (input, auth, why) in [
            ("", None, "no host"),
            ("h1,,h2", None, "empty host"),
            ("h1:0", None, "bad port"),
            ("h1:x/c", None, "bad port"),
            ("h1//x", None, "bad chroot"),
            ("::1", None, "brackets"),
            ("h1", Some("digest"), "scheme:credentials"),
            ("h1", Some("digest:user"), "digest:user:password"),
        ] {
            let err = parse(input, auth).err().unwrap().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
        let debug = format!(
            "{:?}",
            ZkSettings {
                connect: "zk://u:secretpw@h/x".into(),
                session_timeout: Duration::from_secs(1),
                auth: Some("digest:u:secretpw".into()),
            }
        );
        assert!(!debug.contains("secretpw"), "{debug}");
    }
}
