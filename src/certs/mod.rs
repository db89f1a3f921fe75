//! Serin's own certificates: a CA and a serving certificate signed by it, made for
//! `serin certs` and for `serin run --self-signed`, which keeps them in a Secret and rotates
//! them ([`rotation`] decides when, [`secret`] is how they are stored, [`self_signed`] does
//! the Kubernetes side).
//!
//! In a cluster the serving certificate usually comes from cert-manager; for the local
//! environment (Serin on the host at `https://127.0.0.1:<port>`) and for quick experiments we
//! make our own: a self-signed CA, whose PEM goes into the webhook configurations' `caBundle`,
//! and a serving certificate signed by it that is valid for every name the API server may use
//! to reach Serin (the loopback IP, `localhost` and the in-cluster Service names).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod rotation;
pub mod secret;
pub mod self_signed;
mod x509;

pub use x509::{InvalidCertificate, not_after};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// File name of the CA certificate written by [`write`].
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the serving certificate written by [`write`] (the `--tls-cert` default).
pub const SERVING_CERT_FILE: &str = "tls.crt";
/// File name of the serving key written by [`write`] (the `--tls-key` default).
pub const SERVING_KEY_FILE: &str = "tls.key";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertOptions {
    /// Namespace of the Service that fronts the webhook.
    pub namespace: String,
    /// Name of the Service that fronts the webhook.
    pub service: String,
    /// Validity of the CA and the serving certificate, from now.
    pub validity: Duration,
    /// Further DNS names or IP addresses for the serving certificate.
    pub extra_sans: Vec<String>,
}

impl Default for CertOptions {
    fn default() -> Self {
        Self {
            namespace: "serin-system".to_owned(),
            service: "serin".to_owned(),
            validity: Duration::from_secs(365 * 24 * 3600),
            extra_sans: Vec::new(),
        }
    }
}

impl CertOptions {
    /// The subject alternative names of the serving certificate, in order.
    pub fn subject_alt_names(&self) -> Vec<String> {
        let svc = format!("{}.{}.svc", self.service, self.namespace);
        let mut sans = vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            format!("{svc}.cluster.local"),
            svc,
        ];
        sans.extend(self.extra_sans.iter().cloned());
        sans
    }
}

/// A freshly generated CA and serving certificate, all PEM.
///
/// The CA's private key is deliberately not kept: nothing else is ever signed with it, and a
/// key that does not exist cannot leak.
#[derive(Clone)]
pub struct LocalCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for LocalCerts {
    // Keeps the private key out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCerts")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "invalid certificate option: {0} (subject alternative names must be DNS names or IP addresses)"
    )]
    InvalidName(#[source] rcgen::Error),
    #[error("could not generate the certificates: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Makes a self-signed CA and a serving certificate (ECDSA P-256) signed by it.
pub fn generate(opts: &CertOptions) -> Result<LocalCerts, CertError> {
    generate_at(opts, SystemTime::now())
}

/// [`generate`] as if it were `now`: both certificates expire at `now + opts.validity`.
pub fn generate_at(opts: &CertOptions, now: SystemTime) -> Result<LocalCerts, CertError> {
    // An hour of slack so a client whose clock is slightly behind still accepts the cert.
    let not_before = now
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(UNIX_EPOCH);
    let not_after = now + opts.validity;

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name("serin local CA");
    // Path length 0: this CA signs serving certificates only, never another CA.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params, not_before, not_after);
    let ca_key = KeyPair::generate().map_err(CertError::Generate)?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(CertError::Generate)?;

    let mut params =
        CertificateParams::new(opts.subject_alt_names()).map_err(CertError::InvalidName)?;
    params.distinguished_name =
        distinguished_name(&format!("{}.{}.svc", opts.service, opts.namespace));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, not_before, not_after);
    let key = KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params.signed_by(&key, &ca).map_err(CertError::Generate)?;

    Ok(LocalCerts {
        ca_pem: ca.as_ref().pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir` (created if missing).
///
/// Each file is written to a temporary name and renamed into place, so a reader (such as a
/// running Serin polling for rotation) never sees half a file. The key file is `0600`.
pub fn write(dir: &Path, certs: &LocalCerts) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_atomically(&dir.join(CA_CERT_FILE), certs.ca_pem.as_bytes(), 0o644)?;
    // Key before certificate: a reader that catches the moment in between sees a mismatched
    // pair (which it rejects and retries), never a certificate without its key on disk.
    write_atomically(&dir.join(SERVING_KEY_FILE), certs.key_pem.as_bytes(), 0o600)?;
    write_atomically(
        &dir.join(SERVING_CERT_FILE),
        certs.cert_pem.as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// The CA certificate as the webhook configurations' `caBundle` wants it: base64 of the PEM.
///
/// For typed objects (`k8s_openapi` `WebhookClientConfig::ca_bundle`) pass
/// `ByteString(certs.ca_pem.clone().into_bytes())` instead; it is base64-encoded on output.
pub fn ca_bundle(certs: &LocalCerts) -> String {
    base64::engine::general_purpose::STANDARD.encode(certs.ca_pem.as_bytes())
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "serin");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    // rcgen takes `time::OffsetDateTime`; going through the Unix epoch avoids a direct
    // dependency on the `time` crate.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + not_before.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_after = epoch + not_after.duration_since(UNIX_EPOCH).unwrap_or_default();
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    // A leftover from a crashed run would make `create_new` fail.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode is set at creation, so the key is never readable by others, not even
        // briefly.
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(e) = result.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    fn verify(certs: &LocalCerts, name: &str) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(certs.ca_pem.as_bytes()).expect("CA PEM parses");
        roots.add(ca).expect("CA is a valid trust anchor");
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier builds");
        let leaf =
            CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).expect("cert PEM parses");
        let name = ServerName::try_from(name.to_owned()).expect("valid server name");
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn serving_cert_verifies_against_the_ca_for_every_name_the_apiserver_may_use() {
        let certs = generate(&CertOptions::default()).expect("generate");
        for name in [
            "127.0.0.1",
            "localhost",
            "serin.serin-system.svc",
            "serin.serin-system.svc.cluster.local",
        ] {
            verify(&certs, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn serving_cert_names_follow_the_namespace_and_service_options() {
        let opts = CertOptions {
            namespace: "delivery".into(),
            service: "webhook".into(),
            validity: Duration::from_secs(24 * 3600),
            extra_sans: vec!["serin.example.com".into()],
        };
        let certs = generate(&opts).expect("generate");
        verify(&certs, "webhook.delivery.svc").expect("service name");
        verify(&certs, "serin.example.com").expect("extra SAN");
        assert!(verify(&certs, "serin.serin-system.svc").is_err());
    }

    #[test]
    fn serving_cert_is_rejected_by_another_ca() {
        let a = generate(&CertOptions::default()).expect("generate");
        let b = generate(&CertOptions::default()).expect("generate");
        let mixed = LocalCerts {
            ca_pem: b.ca_pem,
            ..a
        };
        assert!(verify(&mixed, "localhost").is_err());
    }

    #[test]
    fn serving_key_matches_serving_cert() {
        let certs = generate(&CertOptions::default()).expect("generate");
        let chain = vec![CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).expect("cert")];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes())
            .expect("key");
        rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
            .expect("key matches cert");
    }

    #[test]
    fn write_creates_the_three_files_with_a_private_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        let certs = generate(&CertOptions::default()).expect("generate");
        write(&out, &certs).expect("write");
        // Writing twice (rotation) replaces the files in place.
        write(&out, &certs).expect("write again");
        assert_eq!(
            fs::read_to_string(out.join(CA_CERT_FILE)).expect("ca"),
            certs.ca_pem
        );
        assert_eq!(
            fs::read_to_string(out.join(SERVING_CERT_FILE)).expect("cert"),
            certs.cert_pem
        );
        assert_eq!(
            fs::read_to_string(out.join(SERVING_KEY_FILE)).expect("key"),
            certs.key_pem
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(out.join(SERVING_KEY_FILE))
                .expect("key metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(&out)
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn ca_bundle_is_base64_of_the_ca_pem() {
        let certs = generate(&CertOptions::default()).expect("generate");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(ca_bundle(&certs))
            .expect("valid base64");
        assert_eq!(decoded, certs.ca_pem.as_bytes());
    }

    #[test]
    fn debug_output_does_not_show_the_private_key() {
        let certs = generate(&CertOptions::default()).expect("generate");
        assert!(!format!("{certs:?}").contains("PRIVATE KEY"));
    }
}
