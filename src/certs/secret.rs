//! How the self-signed certificates are kept in their Secret, shared by every replica.
//!
//! A `kubernetes.io/tls` Secret: `tls.crt` / `tls.key` are the pair every replica serves and
//! `ca.crt` is the `caBundle` as it must be published (so `kubectl get secret -o
//! jsonpath='{.data.ca\.crt}'` prints exactly the base64 a webhook configuration wants). The
//! rotation's own state sits beside them: the CA of the serving pair, the staged pair, the
//! retiring CA, and two timestamps as annotations.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;

use super::rotation::{Pair, Stored};
use super::{LocalCerts, x509};

pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
/// The `caBundle`: every CA the API server must trust right now.
pub const CA_BUNDLE: &str = "ca.crt";
pub const SERVING_CA: &str = "serving-ca.crt";
pub const NEXT_CERT: &str = "next.crt";
pub const NEXT_KEY: &str = "next.key";
pub const NEXT_CA: &str = "next-ca.crt";
pub const RETIRING_CA: &str = "retiring-ca.crt";
/// When `ca.crt` was last put into every webhook configuration and CRD (RFC 3339).
pub const PUBLISHED_AT: &str = "serin.dev/ca-bundle-published-at";
/// When the serving pair was last switched to a staged one (RFC 3339).
pub const SWITCHED_AT: &str = "serin.dev/switched-at";

/// Why what the Secret holds cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("the Secret has no {0}")]
    Missing(&'static str),
    #[error("{0} is not UTF-8 PEM")]
    NotText(&'static str),
    #[error("{key}: {reason}")]
    Certificate { key: &'static str, reason: String },
    #[error("{key} does not belong to {cert}")]
    KeyMismatch {
        cert: &'static str,
        key: &'static str,
    },
    #[error("annotation {key}: {value:?} is not an RFC 3339 time")]
    Time { key: &'static str, value: String },
    #[error("both a staged pair and a retiring CA: not a state a rotation leaves behind")]
    StagedWhileRetiring,
}

/// A pair as stored, from freshly generated certificates.
pub fn pair(certs: LocalCerts) -> Result<Pair, Unusable> {
    let not_after = x509::not_after(&certs.cert_pem).map_err(|e| Unusable::Certificate {
        key: TLS_CERT,
        reason: e.to_string(),
    })?;
    Ok(Pair {
        ca_pem: certs.ca_pem,
        cert_pem: certs.cert_pem,
        key_pem: certs.key_pem,
        not_after,
    })
}

/// Reads what the Secret holds.
pub fn decode(secret: &Secret) -> Result<Stored, Unusable> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let text = |key: &'static str| -> Result<Option<String>, Unusable> {
        data.get(key)
            .map(|bytes| String::from_utf8(bytes.0.clone()).map_err(|_| Unusable::NotText(key)))
            .transpose()
    };
    let required = |key: &'static str| text(key)?.ok_or(Unusable::Missing(key));

    let serving = read_pair(
        required(SERVING_CA)?,
        (TLS_CERT, required(TLS_CERT)?),
        (TLS_KEY, required(TLS_KEY)?),
    )?;
    let next = match (text(NEXT_CA)?, text(NEXT_CERT)?, text(NEXT_KEY)?) {
        (None, None, None) => None,
        (ca, cert, key) => Some(read_pair(
            ca.ok_or(Unusable::Missing(NEXT_CA))?,
            (NEXT_CERT, cert.ok_or(Unusable::Missing(NEXT_CERT))?),
            (NEXT_KEY, key.ok_or(Unusable::Missing(NEXT_KEY))?),
        )?),
    };
    let retiring_ca = text(RETIRING_CA)?;
    if next.is_some() && retiring_ca.is_some() {
        return Err(Unusable::StagedWhileRetiring);
    }
    let stored = Stored {
        serving,
        next,
        retiring_ca,
        published_at: annotation_time(secret, PUBLISHED_AT)?,
        switched_at: annotation_time(secret, SWITCHED_AT)?,
    };
    // A bundle edited by hand is not the bundle that was published.
    let stored = match text(CA_BUNDLE)? {
        Some(bundle) if bundle == stored.bundle() => stored,
        _ => Stored {
            published_at: None,
            ..stored
        },
    };
    Ok(stored)
}

/// Writes `stored` into `secret` (its data and Serin's annotations; the rest is kept).
pub fn encode(stored: &Stored, secret: &mut Secret) {
    let mut data = BTreeMap::new();
    let mut put = |key: &str, value: &str| {
        data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
    };
    put(CA_BUNDLE, &stored.bundle());
    put(TLS_CERT, &stored.serving.cert_pem);
    put(TLS_KEY, &stored.serving.key_pem);
    put(SERVING_CA, &stored.serving.ca_pem);
    if let Some(next) = &stored.next {
        put(NEXT_CERT, &next.cert_pem);
        put(NEXT_KEY, &next.key_pem);
        put(NEXT_CA, &next.ca_pem);
    }
    if let Some(retiring) = &stored.retiring_ca {
        put(RETIRING_CA, retiring);
    }
    secret.data = Some(data);
    secret.string_data = None;
    let annotations = secret.metadata.annotations.get_or_insert_default();
    for (key, time) in [
        (PUBLISHED_AT, stored.published_at),
        (SWITCHED_AT, stored.switched_at),
    ] {
        match time.and_then(|t| Timestamp::try_from(t).ok()) {
            Some(t) => annotations.insert(key.to_owned(), t.to_string()),
            None => annotations.remove(key),
        };
    }
    if secret.type_.is_none() {
        secret.type_ = Some("kubernetes.io/tls".to_owned());
    }
}

fn read_pair(
    ca_pem: String,
    (cert_name, cert_pem): (&'static str, String),
    (key_name, key_pem): (&'static str, String),
) -> Result<Pair, Unusable> {
    let bad = |key: &'static str, reason: String| Unusable::Certificate { key, reason };
    let not_after = x509::not_after(&cert_pem).map_err(|e| bad(cert_name, e.to_string()))?;
    x509::not_after(&ca_pem).map_err(|e| bad(SERVING_CA, e.to_string()))?;
    // The same check the TLS server makes when it loads a pair: a mismatched pair in the
    // Secret would otherwise be found by every replica, and never repaired.
    let chain = vec![
        rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(cert_name, e.to_string()))?,
    ];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad(key_name, e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(key_name, e.to_string()))?;
    if CertifiedKey::new(chain, signing).keys_match().is_err() {
        return Err(Unusable::KeyMismatch {
            cert: cert_name,
            key: key_name,
        });
    }
    Ok(Pair {
        ca_pem,
        cert_pem,
        key_pem,
        not_after,
    })
}

fn annotation_time(secret: &Secret, key: &'static str) -> Result<Option<SystemTime>, Unusable> {
    let Some(value) = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
    else {
        return Ok(None);
    };
    value
        .parse::<Timestamp>()
        .map(|t| Some(SystemTime::from(t)))
        .map_err(|_| Unusable::Time {
            key,
            value: value.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertOptions, generate};
    use std::time::{Duration, UNIX_EPOCH};

    fn fresh() -> Pair {
        pair(generate(&CertOptions::default()).expect("generate")).expect("pair")
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn round_trip(stored: &Stored) -> Result<Stored, Unusable> {
        let mut secret = Secret::default();
        encode(stored, &mut secret);
        decode(&secret)
    }

    #[test]
    fn every_phase_of_a_rotation_survives_the_secret() {
        let steady = Stored::new(fresh()).published(at(1_700_000_000));
        assert_eq!(round_trip(&steady), Ok(steady.clone()));
        let staged = steady.staged(fresh()).published(at(1_700_000_100));
        assert_eq!(round_trip(&staged), Ok(staged.clone()));
        let switched = staged.switched(at(1_700_000_200));
        assert_eq!(round_trip(&switched), Ok(switched.clone()));
    }

    #[test]
    fn ca_crt_is_the_bundle_and_the_secret_is_a_tls_secret() {
        let staged = Stored::new(fresh()).staged(fresh());
        let mut secret = Secret::default();
        encode(&staged, &mut secret);
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data[CA_BUNDLE].0, staged.bundle().into_bytes());
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    }

    #[test]
    fn a_bundle_edited_by_hand_counts_as_unpublished() {
        let steady = Stored::new(fresh()).published(at(1_700_000_000));
        let mut secret = Secret::default();
        encode(&steady, &mut secret);
        secret
            .data
            .as_mut()
            .expect("data")
            .insert(CA_BUNDLE.to_owned(), ByteString(b"something else".to_vec()));
        assert_eq!(decode(&secret).expect("decodes").published_at, None);
    }

    #[test]
    fn missing_or_mismatched_parts_are_named() {
        let steady = Stored::new(fresh());
        let mut secret = Secret::default();
        encode(&steady, &mut secret);
        let mut without_key = secret.clone();
        without_key.data.as_mut().expect("data").remove(TLS_KEY);
        assert_eq!(decode(&without_key), Err(Unusable::Missing(TLS_KEY)));

        let other = fresh();
        let mut mismatched = secret.clone();
        mismatched
            .data
            .as_mut()
            .expect("data")
            .insert(TLS_KEY.to_owned(), ByteString(other.key_pem.into_bytes()));
        assert_eq!(
            decode(&mismatched),
            Err(Unusable::KeyMismatch {
                cert: TLS_CERT,
                key: TLS_KEY
            })
        );

        let mut half_staged = secret.clone();
        half_staged.data.as_mut().expect("data").insert(
            NEXT_CERT.to_owned(),
            ByteString(other.cert_pem.into_bytes()),
        );
        assert_eq!(decode(&half_staged), Err(Unusable::Missing(NEXT_CA)));

        let mut bad_time = secret;
        bad_time
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(PUBLISHED_AT.to_owned(), "yesterday".to_owned());
        assert!(matches!(
            decode(&bad_time),
            Err(Unusable::Time {
                key: PUBLISHED_AT,
                ..
            })
        ));
    }

    #[test]
    fn encoding_keeps_the_secret_type_and_other_annotations() {
        let mut secret = Secret {
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        };
        secret
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("owner".to_owned(), "me".to_owned());
        encode(&Stored::new(fresh()).published(at(5)), &mut secret);
        encode(&Stored::new(fresh()), &mut secret);
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let annotations = secret.metadata.annotations.expect("annotations");
        assert_eq!(annotations.get("owner").map(String::as_str), Some("me"));
        assert!(!annotations.contains_key(PUBLISHED_AT), "{annotations:?}");
    }
}
