//! TLS on the control plane (feature `tls`): the server's certificate and key, the CA that
//! verifies clients (mutual TLS) and the client's side of it, all read from PEM files and read
//! again when the files change, so certificates rotate without a restart.
//!
//! Without the feature the settings still exist, so callers need no `cfg` of their own, but
//! using them fails with [`Error::Tls`] naming the feature.

use crate::Error;
use std::path::PathBuf;

/// TLS settings of the control server.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerTls {
    /// PEM certificate chain the server presents (the pod's certificate first).
    pub cert: PathBuf,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates: when set, clients must present a certificate signed by one of them
    /// (mutual TLS) to reach `/control/*`, `/reset` and `/exec`, and the read-only routes too
    /// unless `open_read_only`.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: let clients without a certificate read `/info`, `/log`, `/healthz`,
    /// `/readyz` and `/metrics` (still over TLS). A certificate that is presented is always
    /// verified.
    pub open_read_only: bool,
}

/// TLS settings of the client (the leader's fan-out, the CLI, tools).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientTls {
    /// PEM CA certificates the pods' certificates must be signed by.
    pub ca: PathBuf,
    /// PEM certificate chain presented to pods that ask for one (mutual TLS); with `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// The name the pods' certificates must carry; `None`: the pod's IP address (the
    /// certificate then needs it as an IP subject alternative name).
    pub server_name: Option<String>,
}

impl ServerTls {
    /// Reads every file once and builds the TLS configuration, so a bad file fails at start
    /// with an error naming it, not at the first connection.
    pub fn check(&self) -> Result<(), Error> {
        imp::check_server(self)
    }
}

impl ClientTls {
    /// Reads every file once and builds the TLS configuration.
    pub fn check(&self) -> Result<(), Error> {
        imp::check_client(self)
    }
}

#[cfg(not(feature = "tls"))]
pub(crate) mod imp {
    use super::*;

    pub(crate) const MISSING: &str = "this build has no TLS support: build ochopod-http with the \
                                      `tls` feature (the ochopod binary has it by default)";

    pub(crate) fn check_server(_: &ServerTls) -> Result<(), Error> {
        Err(Error::Tls(MISSING.to_string()))
    }

    pub(crate) fn check_client(_: &ClientTls) -> Result<(), Error> {
        Err(Error::Tls(MISSING.to_string()))
    }
}

#[cfg(feature = "tls")]
pub(crate) mod imp {
    use super::*;
    use rustls::client::ResolvesClientCert;
    use rustls::crypto::CryptoProvider;
    use rustls::server::WebPkiClientVerifier;
    use rustls::sign::CertifiedKey;
    use rustls::{RootCertStore, SignatureScheme};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        let iter = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
        let certs = iter
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad PEM in the {what} {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "the {what} {} holds no `BEGIN CERTIFICATE` block: give a PEM certificate file",
                path.display()
            ));
        }
        Ok(certs)
    }

    fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
        // The error never quotes the file: it may hold a key.
        PrivateKeyDer::from_pem_file(path).map_err(|e| {
            format!(
                "cannot read a private key from {}: {}; give a PEM key (PKCS#8, PKCS#1 or SEC1)",
                path.display(),
                match e {
                    rustls_pki_types::pem::Error::Io(io) => io.to_string(),
                    rustls_pki_types::pem::Error::NoItemsFound => "no key in it".to_string(),
                    _ => "not a PEM private key".to_string(),
                }
            )
        })
    }

    fn roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
        let mut store = RootCertStore::empty();
        for c in certs(path, "CA file")? {
            store
                .add(c)
                .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
        }
        Ok(Arc::new(store))
    }

    fn certified(cert: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, String> {
        let chain = certs(cert, "certificate file")?;
        let key = key(key_path)?;
        let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
            format!(
                "the key {} does not go with the certificate {}: {e}",
                key_path.display(),
                cert.display()
            )
        })?;
        Ok(Arc::new(ck))
    }

    /// What a file looked like when it was read: a change of any of these means read it again
    /// (a rename over it changes the inode, an edit in place the time or the size).
    type Stamp = Option<(u64, i64, i64, u64)>;

    fn stamp(path: &Path) -> Stamp {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
    }

    /// A value built from files, built again when one of them changes. A failed rebuild (a
    /// half-written file) keeps the previous value and says so once per change.
    pub(crate) struct Reloading<T> {
        files: Vec<PathBuf>,
        build: Box<dyn Fn() -> Result<T, String> + Send + Sync>,
        state: Mutex<(Vec<Stamp>, T)>,
    }

    impl<T: Clone> Reloading<T> {
        fn new(
            files: Vec<PathBuf>,
            build: impl Fn() -> Result<T, String> + Send + Sync + 'static,
        ) -> Result<Self, String> {
            let stamps = files.iter().map(|f| stamp(f)).collect();
            let value = build()?;
            Ok(Reloading {
                files,
                build: Box::new(build),
                state: Mutex::new((stamps, value)),
            })
        }

        pub(crate) fn current(&self) -> T {
            let stamps: Vec<Stamp> = self.files.iter().map(|f| stamp(f)).collect();
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.0 != stamps {
                state.0 = stamps;
                match (self.build)() {
                    Ok(v) => {
                        tracing::info!(files = ?self.files, "TLS files changed: reloaded");
                        state.1 = v;
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS files changed but cannot be used: keeping the previous ones"
                    ),
                }
            }
            state.1.clone()
        }
    }

    fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, String> {
        let ck = certified(&tls.cert, &tls.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &tls.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut v = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider());
                if tls.open_read_only {
                    v = v.allow_unauthenticated();
                }
                let v = v
                    .build()
                    .map_err(|e| format!("cannot verify clients with {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(v)
            }
        };
        let mut cfg =
            builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)));
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The server's TLS configuration, rebuilt when a file changes.
    pub(crate) type ServerState = Reloading<Arc<rustls::ServerConfig>>;

    pub(crate) fn server_state(tls: &ServerTls) -> Result<ServerState, Error> {
        let mut files = vec![tls.cert.clone(), tls.key.clone()];
        files.extend(tls.client_ca.clone());
        let t = tls.clone();
        Reloading::new(files, move || server_config(&t)).map_err(Error::Tls)
    }

    pub(crate) fn check_server(tls: &ServerTls) -> Result<(), Error> {
        server_state(tls).map(drop)
    }

    /// The client certificate, read again when its files change.
    #[derive(Debug)]
    struct ClientCert {
        current: Reloading<Arc<CertifiedKey>>,
    }

    impl std::fmt::Debug for Reloading<Arc<CertifiedKey>> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Reloading")
                .field("files", &self.files)
                .finish()
        }
    }

    impl ResolvesClientCert for ClientCert {
        fn resolve(
            &self,
            _hints: &[&[u8]],
            _schemes: &[SignatureScheme],
        ) -> Option<Arc<CertifiedKey>> {
            Some(self.current.current())
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    pub(crate) fn client_config(tls: &ClientTls) -> Result<rustls::ClientConfig, Error> {
        let build = || -> Result<rustls::ClientConfig, String> {
            let builder = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots(&tls.ca)?);
            let cfg = match (&tls.cert, &tls.key) {
                (None, None) => builder.with_no_client_auth(),
                (Some(cert), Some(key)) => {
                    let (c, k) = (cert.clone(), key.clone());
                    let current =
                        Reloading::new(vec![c.clone(), k.clone()], move || certified(&c, &k))?;
                    builder.with_client_cert_resolver(Arc::new(ClientCert { current }))
                }
                _ => {
                    return Err(
                        "a client certificate needs both its certificate and its key \
                                files: give both or neither"
                            .to_string(),
                    )
                }
            };
            // hyper-rustls sets ALPN itself.
            Ok(cfg)
        };
        build().map_err(Error::Tls)
    }

    pub(crate) fn check_client(tls: &ClientTls) -> Result<(), Error> {
        client_config(tls).map(drop)
    }
}
