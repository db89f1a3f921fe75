//! The serving certificate: loaded as a pair, swapped at runtime when its files change.
//!
//! In a cluster the certificate and key come from a mounted Secret (often cert-manager's),
//! which the kubelet rotates by writing a new `..data` directory and swapping a symlink. We
//! poll the *contents* of both files rather than watching inodes or mtimes, because the paths
//! we were given keep pointing at the same symlinks while what they resolve to changes. A
//! changed pair is used only if both files parse and the key belongs to the certificate;
//! otherwise the current pair keeps being served and the reason is logged and counted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::KeyProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio::time::MissedTickBehavior;

use super::metrics::{Metrics, ReloadResult};

/// How often [`ServingCert::watch`] looks at the files unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid PEM: {source}")]
    Pem { path: PathBuf, source: pem::Error },
    #[error("{path} contains no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} contains no PEM private key")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: unusable private key: {source}")]
    PrivateKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{path}: unusable certificate: {source}")]
    Certificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "the key in {key} does not belong to the certificate in {cert} \
         (a rotation may be half-written)"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("could not build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// What one look at the files found.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// Same contents as last time: nothing to do.
    Unchanged,
    /// A new pair is now being served.
    Reloaded,
    /// The files changed but cannot be used; the previous pair is still served.
    Failed(TlsError),
}

/// The certificate and key Serin serves, reloadable as a pair. Hand it to [`server_config`]
/// and spawn [`ServingCert::watch`].
pub struct ServingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    key_provider: &'static dyn KeyProvider,
    current: RwLock<Arc<CertifiedKey>>,
    /// Contents of the pair last tried, good or bad: a broken pair is reported once, not
    /// on every tick, and tried again as soon as either file changes.
    last_seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Loads the pair; fails if either file is unreadable or invalid, or if they do not match.
    pub fn load(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Arc<Self>, TlsError> {
        let cert_path = cert_path.into();
        let key_path = key_path.into();
        let key_provider = rustls::crypto::ring::default_provider().key_provider;
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let certified = parse_pair(key_provider, &cert_path, &cert_pem, &key_path, &key_pem)?;
        Ok(Arc::new(ServingCert {
            cert_path,
            key_path,
            key_provider,
            current: RwLock::new(Arc::new(certified)),
            last_seen: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// The pair currently served.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads both files and, if they changed and are usable, starts serving them.
    pub fn reload_if_changed(&self) -> ReloadOutcome {
        // Small local files: reading them inline is cheaper than a blocking-pool hop.
        let (cert_pem, key_pem) = match read(&self.cert_path).and_then(|cert| {
            let key = read(&self.key_path)?;
            Ok((cert, key))
        }) {
            Ok(pair) => pair,
            // A file missing mid-swap is retried on the next tick (`last_seen` untouched).
            Err(e) => return ReloadOutcome::Failed(e),
        };
        let mut last_seen = self
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last_seen.0 == cert_pem && last_seen.1 == key_pem {
            return ReloadOutcome::Unchanged;
        }
        let parsed = parse_pair(
            self.key_provider,
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
        );
        *last_seen = (cert_pem, key_pem);
        match parsed {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
                ReloadOutcome::Reloaded
            }
            Err(e) => ReloadOutcome::Failed(e),
        }
    }

    /// Polls the files every `interval` until the task is dropped, logging and counting
    /// every reload attempt. Spawn it: `tokio::spawn(cert.clone().watch(interval, metrics))`.
    pub async fn watch(self: Arc<Self>, interval: Duration, metrics: Metrics) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick fires at once; the pair was just loaded.
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match self.reload_if_changed() {
                ReloadOutcome::Unchanged => {}
                ReloadOutcome::Reloaded => {
                    metrics.tls_reload(ReloadResult::Success);
                    tracing::info!(
                        cert = %self.cert_path.display(),
                        key = %self.key_path.display(),
                        "serving certificate reloaded"
                    );
                }
                ReloadOutcome::Failed(error) => {
                    metrics.tls_reload(ReloadResult::Error);
                    tracing::warn!(
                        %error,
                        "serving certificate changed but cannot be used; \
                         still serving the previous one"
                    );
                }
            }
        }
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

/// A TLS configuration that serves `cert` (and whatever it is reloaded to), HTTP/1.x only,
/// with the ring provider chosen explicitly rather than whatever is the process default.
///
/// ALPN offers `http/1.1` first and then `http/1.0`. A server may only select a protocol the
/// client offered (RFC 7301), and rustls aborts the handshake with `no_application_protocol`
/// when nothing matches; listing `http/1.0` lets a client that offers only that through, to
/// be answered by the same HTTP/1.1 server (which serves HTTP/1.0 requests as RFC 9112 asks).
/// Clients offering `http/1.1` (the API server among them) still get it. A client offering
/// only `h2` is still refused: nothing here speaks HTTP/2.
pub fn server_config(cert: Arc<ServingCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(config))
}

/// Installs ring as the process-wide rustls provider (used by kube's client, among others).
/// Safe to call more than once.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_pair(
    key_provider: &dyn KeyProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: key_path.to_owned(),
        },
        source => TlsError::Pem {
            path: key_path.to_owned(),
            source,
        },
    })?;
    let signing_key =
        key_provider
            .load_private_key(key)
            .map_err(|source| TlsError::PrivateKey {
                path: key_path.to_owned(),
                source,
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // ring can always derive the public key; `Unknown` would mean a provider that
        // cannot, and then the handshake is the only check there is.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(source) => Err(TlsError::Certificate {
            path: cert_path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self, CertOptions, LocalCerts};

    fn pair() -> LocalCerts {
        certs::generate(&CertOptions::default()).expect("generate")
    }

    fn write_pair(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&c, cert).expect("write cert");
        std::fs::write(&k, key).expect("write key");
        (c, k)
    }

    fn served_cert(cert: &ServingCert) -> Vec<u8> {
        cert.certified_key().cert[0].to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("cert PEM")
            .to_vec()
    }

    #[test]
    fn load_refuses_a_key_that_belongs_to_another_certificate() {
        let (a, b) = (pair(), pair());
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = write_pair(dir.path(), &a.cert_pem, &b.key_pem);
        let err = ServingCert::load(c, k).expect_err("mismatch");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ServingCert::load(dir.path().join("nope.crt"), dir.path().join("nope.key"))
            .expect_err("missing");
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }

    #[test]
    fn load_refuses_files_without_pem_sections() {
        let a = pair();
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = write_pair(dir.path(), "not a cert", &a.key_pem);
        assert!(matches!(
            ServingCert::load(c, k),
            Err(TlsError::NoCertificate { .. })
        ));
        let (c, k) = write_pair(dir.path(), &a.cert_pem, &a.cert_pem);
        assert!(matches!(
            ServingCert::load(c, k),
            Err(TlsError::NoPrivateKey { .. })
        ));
    }

    #[test]
    fn unchanged_files_are_not_reloaded() {
        let a = pair();
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = write_pair(dir.path(), &a.cert_pem, &a.key_pem);
        let cert = ServingCert::load(c, k).expect("load");
        assert!(matches!(cert.reload_if_changed(), ReloadOutcome::Unchanged));
    }

    #[test]
    fn half_written_rotation_keeps_the_old_pair_until_the_key_arrives() {
        let (a, b) = (pair(), pair());
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = write_pair(dir.path(), &a.cert_pem, &a.key_pem);
        let cert = ServingCert::load(&c, &k).expect("load");

        std::fs::write(&c, &b.cert_pem).expect("new cert, old key");
        assert!(matches!(
            cert.reload_if_changed(),
            ReloadOutcome::Failed(TlsError::KeyMismatch { .. })
        ));
        assert_eq!(served_cert(&cert), der(&a.cert_pem));
        // The same broken state is not re-reported on every tick.
        assert!(matches!(cert.reload_if_changed(), ReloadOutcome::Unchanged));

        std::fs::write(&k, &b.key_pem).expect("new key");
        assert!(matches!(cert.reload_if_changed(), ReloadOutcome::Reloaded));
        assert_eq!(served_cert(&cert), der(&b.cert_pem));
    }

    #[test]
    fn a_vanished_file_keeps_the_old_pair_and_is_retried() {
        let a = pair();
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = write_pair(dir.path(), &a.cert_pem, &a.key_pem);
        let cert = ServingCert::load(&c, &k).expect("load");
        std::fs::remove_file(&k).expect("remove key");
        assert!(matches!(
            cert.reload_if_changed(),
            ReloadOutcome::Failed(TlsError::Read { .. })
        ));
        assert!(matches!(
            cert.reload_if_changed(),
            ReloadOutcome::Failed(TlsError::Read { .. })
        ));
        assert_eq!(served_cert(&cert), der(&a.cert_pem));
        std::fs::write(&k, &a.key_pem).expect("restore key");
        assert!(matches!(cert.reload_if_changed(), ReloadOutcome::Unchanged));
    }

    #[test]
    fn install_crypto_provider_can_be_called_twice() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
