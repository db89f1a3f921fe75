//! Credentials for a Prometheus that asks for them (Thanos, Mimir, managed services): a bearer
//! token or basic auth, a CA to trust instead of the system's, a client certificate.
//!
//! Two doors, one model: a metric's `secretRef` (the keys of a Secret in the template's
//! namespace, read at analysis time by [`read_secret`]) and Serin's `--prometheus-*` flags
//! (files, [`CredentialFiles`], read again at every query so that a rotated token or
//! certificate is used from the next one). Both become [`Credentials`] through
//! [`Credentials::from_keys`], which refuses contradictory combinations naming where each part
//! came from ([`Origin`]). No value ever appears in an error, a log or a `Debug` output: a
//! message names a key, a flag or a file, never what it holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::future::BoxFuture;

/// The keys Serin reads in a Secret (Flagger's `token`, `username`, `password`, and the
/// `kubernetes.io/tls` names for the certificates).
pub const TOKEN: &str = "token";
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";
pub const CA: &str = "ca.crt";
pub const CERT: &str = "tls.crt";
pub const KEY: &str = "tls.key";
const KEYS: [&str; 6] = [TOKEN, USERNAME, PASSWORD, CA, CERT, KEY];

/// What Serin sends to a Prometheus that wants credentials. `Debug` shows which parts are
/// set, never their values.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub authorization: Option<Authorization>,
    pub tls: TlsMaterial,
}

/// How a request says who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization {
    Bearer(String),
    Basic { username: String, password: String },
}

/// The TLS side of [`Credentials`], PEM: what a client of its own is built with.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsMaterial {
    /// CA certificates trusted instead of the system's.
    pub ca: Option<Vec<u8>>,
    /// A client certificate (chain) followed by its private key.
    pub identity: Option<Vec<u8>>,
}

impl TlsMaterial {
    /// Nothing of its own: the shared clients do.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.identity.is_none()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let authorization = match &self.authorization {
            None => "none",
            Some(Authorization::Bearer(_)) => "bearer token",
            Some(Authorization::Basic { .. }) => "basic auth",
        };
        f.debug_struct("Credentials")
            .field("authorization", &authorization)
            .field("tls", &self.tls)
            .finish()
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authorization::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Authorization::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// Where credentials come from, so that a message names the key or flag a person typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The Secret a metric's `secretRef` names.
    Secret { namespace: String, name: String },
    /// Serin's own `--prometheus-*` flags.
    Flags,
}

impl Origin {
    /// One part of it: `key "token" of Secret shop/thanos` or `--prometheus-bearer-token-file`.
    fn part(&self, key: &str) -> String {
        match self {
            Origin::Secret { .. } => format!("key {key:?} of {self}"),
            Origin::Flags => flag_of(key).to_owned(),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Secret { namespace, name } => write!(f, "Secret {namespace}/{name}"),
            Origin::Flags => f.write_str("the --prometheus-* flags"),
        }
    }
}

/// The flag that stands for a Secret's key.
fn flag_of(key: &str) -> &'static str {
    match key {
        TOKEN => "--prometheus-bearer-token-file",
        USERNAME => "--prometheus-username",
        PASSWORD => "--prometheus-password-file",
        CA => "--prometheus-ca-file",
        CERT => "--prometheus-client-cert",
        _ => "--prometheus-client-key",
    }
}

/// Why there are no usable credentials. Each names the Secret and key, or the flag; none
/// holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "{first} and {second} cannot be used together: give a bearer token or basic auth, not both"
    )]
    Conflict { first: String, second: String },
    #[error("{given} needs {missing} too")]
    Incomplete { given: String, missing: String },
    #[error("{part} {why}")]
    Unusable { part: String, why: &'static str },
    #[error(
        "{origin} holds none of the keys {}, so it gives no credentials",
        KEYS.join(", ")
    )]
    Empty { origin: String },
    #[error("{origin} does not exist (it is named in the metric's secretRef)")]
    NotFound { origin: String },
    #[error("{origin} could not be read: {reason}")]
    Unreadable { origin: String, reason: String },
    #[error("{address} is not https://: Serin sends credentials only over TLS, never in clear")]
    InClear { address: String },
}

impl Credentials {
    /// The credentials `keys` (a Secret's data, or what the flags' files hold) give, or what
    /// is contradictory, incomplete or unusable in them. Keys Serin does not read are
    /// ignored. A token is trimmed of surrounding whitespace and a password of a trailing
    /// newline, as files (and `kubectl create secret --from-file`) leave them.
    pub fn from_keys(
        origin: &Origin,
        keys: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, CredentialsError> {
        let get = |key: &str| keys.get(key).map(Vec::as_slice);
        if KEYS.iter().all(|key| get(key).is_none()) {
            return Err(CredentialsError::Empty {
                origin: origin.to_string(),
            });
        }
        let text = |key: &str| -> Result<Option<String>, CredentialsError> {
            get(key)
                .map(|bytes| {
                    String::from_utf8(bytes.to_vec()).map_err(|_| CredentialsError::Unusable {
                        part: origin.part(key),
                        why: "is not UTF-8 text",
                    })
                })
                .transpose()
        };
        let token = text(TOKEN)?.map(|t| t.trim().to_owned());
        let username = text(USERNAME)?.map(|u| u.trim_end_matches(['\r', '\n']).to_owned());
        let password = text(PASSWORD)?.map(|p| p.trim_end_matches(['\r', '\n']).to_owned());
        let authorization = match (token, username, password) {
            (Some(_), Some(_), _) => {
                return Err(CredentialsError::Conflict {
                    first: origin.part(TOKEN),
                    second: origin.part(USERNAME),
                });
            }
            (Some(_), None, Some(_)) => {
                return Err(CredentialsError::Conflict {
                    first: origin.part(TOKEN),
                    second: origin.part(PASSWORD),
                });
            }
            (Some(token), None, None) => {
                Some(Authorization::Bearer(header_safe(origin, TOKEN, token)?))
            }
            (None, Some(_), None) => {
                return Err(CredentialsError::Incomplete {
                    given: origin.part(USERNAME),
                    missing: origin.part(PASSWORD),
                });
            }
            (None, None, Some(_)) => {
                return Err(CredentialsError::Incomplete {
                    given: origin.part(PASSWORD),
                    missing: origin.part(USERNAME),
                });
            }
            (None, Some(username), Some(password)) => {
                if username.contains(':') {
                    return Err(CredentialsError::Unusable {
                        part: origin.part(USERNAME),
                        why: "holds a ':', which basic auth cannot carry in a username",
                    });
                }
                let username = header_safe(origin, USERNAME, username)?;
                let password = header_safe(origin, PASSWORD, password)?;
                Some(Authorization::Basic { username, password })
            }
            (None, None, None) => None,
        };
        let ca = match get(CA) {
            Some(pem) => {
                let parsed = reqwest::Certificate::from_pem_bundle(pem);
                if !parsed.is_ok_and(|certs| !certs.is_empty()) {
                    return Err(CredentialsError::Unusable {
                        part: origin.part(CA),
                        why: "is not a PEM certificate",
                    });
                }
                Some(pem.to_vec())
            }
            None => None,
        };
        let identity = match (get(CERT), get(KEY)) {
            (Some(cert), Some(key)) => {
                if reqwest::Certificate::from_pem_bundle(cert).map_or(true, |c| c.is_empty()) {
                    return Err(CredentialsError::Unusable {
                        part: origin.part(CERT),
                        why: "is not a PEM certificate",
                    });
                }
                let mut pem = cert.to_vec();
                pem.push(b'\n');
                pem.extend_from_slice(key);
                // The parser's own error is not quoted: it could quote the key.
                if reqwest::Identity::from_pem(&pem).is_err() {
                    return Err(CredentialsError::Unusable {
                        part: origin.part(KEY),
                        why: "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    });
                }
                Some(pem)
            }
            (Some(_), None) => {
                return Err(CredentialsError::Incomplete {
                    given: origin.part(CERT),
                    missing: origin.part(KEY),
                });
            }
            (None, Some(_)) => {
                return Err(CredentialsError::Incomplete {
                    given: origin.part(KEY),
                    missing: origin.part(CERT),
                });
            }
            (None, None) => None,
        };
        Ok(Credentials {
            authorization,
            tls: TlsMaterial { ca, identity },
        })
    }

    /// Refuses to send these credentials to `address` unless it is `https://`.
    pub fn check_address(&self, address: &str) -> Result<(), CredentialsError> {
        match address
            .trim_start()
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        {
            true => Ok(()),
            false => Err(CredentialsError::InClear {
                address: address.to_owned(),
            }),
        }
    }
}

/// `value`, unless it is empty or holds what an HTTP header cannot carry (control
/// characters, a newline inside).
fn header_safe(origin: &Origin, key: &str, value: String) -> Result<String, CredentialsError> {
    if value.is_empty() {
        return Err(CredentialsError::Unusable {
            part: origin.part(key),
            why: "is empty",
        });
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(CredentialsError::Unusable {
            part: origin.part(key),
            why: "holds control characters (a line break inside?), which an HTTP header cannot carry",
        });
    }
    Ok(value)
}

/// The `--prometheus-*` flags: files (and a username), read again at every query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialFiles {
    pub bearer_token_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl CredentialFiles {
    /// No flag given: the default Prometheus is asked without credentials.
    pub fn is_empty(&self) -> bool {
        *self == CredentialFiles::default()
    }

    /// What the files hold now, checked as a Secret's keys are; `None` without flags.
    pub fn read(&self) -> Result<Option<Credentials>, CredentialsError> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut keys = BTreeMap::new();
        if let Some(username) = &self.username {
            keys.insert(USERNAME.to_owned(), username.clone().into_bytes());
        }
        for (key, path) in [
            (TOKEN, &self.bearer_token_file),
            (PASSWORD, &self.password_file),
            (CA, &self.ca_file),
            (CERT, &self.client_cert),
            (KEY, &self.client_key),
        ] {
            let Some(path) = path else { continue };
            let bytes = read_bounded(path).map_err(|reason| CredentialsError::Unreadable {
                origin: format!("{} {}", flag_of(key), path.display()),
                reason,
            })?;
            keys.insert(key.to_owned(), bytes);
        }
        Credentials::from_keys(&Origin::Flags, &keys).map(Some)
    }
}

/// A credentials file is small: a Secret holds at most 1 MiB, and so may a file.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn read_bounded(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {} MiB", MAX_FILE_BYTES >> 20));
    }
    Ok(bytes)
}

/// A Secret's data by key, or why it could not be read.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Reads the Secrets that metrics and alerts name: the Kubernetes API in the controller, a
/// map in tests. `Ok(None)` when the Secret does not exist; `Err` says why it could not be read
/// (never with its contents).
pub trait SecretSource: Send + Sync {
    fn data(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<SecretData>, String>>;
}

impl SecretSource for kube::Client {
    fn data(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<SecretData>, String>> {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.clone(), namespace);
        let name = name.to_owned();
        Box::pin(async move {
            match api.get_opt(&name).await {
                Ok(Some(secret)) => Ok(Some(
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(key, value)| (key, value.0))
                        .collect(),
                )),
                Ok(None) => Ok(None),
                Err(kube::Error::Api(status)) if status.code == 403 => Err(format!(
                    "Serin may not read it ({}); grant get on it (docs/security.md)",
                    status.message
                )),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// The credentials in Secret `namespace/name`, read now (once per measurement: a changed
/// Secret is used from the next interval).
pub async fn read_secret(
    source: &dyn SecretSource,
    namespace: &str,
    name: &str,
) -> Result<Credentials, CredentialsError> {
    let origin = Origin::Secret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    match source.data(namespace, name).await {
        Ok(Some(keys)) => Credentials::from_keys(&origin, &keys),
        Ok(None) => Err(CredentialsError::NotFound {
            origin: origin.to_string(),
        }),
        Err(reason) => Err(CredentialsError::Unreadable {
            origin: origin.to_string(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_VALUE: &str = "s3cr3t-value";

    fn origin() -> Origin {
        Origin::Secret {
            namespace: "shop".into(),
            name: "thanos-auth".into(),
        }
    }

    fn keys(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    fn refusal(pairs: &[(&str, &[u8])]) -> String {
        Credentials::from_keys(&origin(), &keys(pairs))
            .expect_err("refused")
            .to_string()
    }

    fn pem_pair() -> crate::certs::LocalCerts {
        crate::certs::generate(&crate::certs::CertOptions::default()).expect("certificates")
    }

    #[test]
    fn a_token_is_trimmed_and_becomes_a_bearer_token() {
        let credentials =
            Credentials::from_keys(&origin(), &keys(&[(TOKEN, b"  abc.def\n")])).expect("ok");
        assert_eq!(
            credentials.authorization,
            Some(Authorization::Bearer("abc.def".into()))
        );
        assert!(credentials.tls.is_empty());
    }

    #[test]
    fn username_and_password_become_basic_auth() {
        let credentials = Credentials::from_keys(
            &origin(),
            &keys(&[(USERNAME, b"serin"), (PASSWORD, b"pw with spaces \n")]),
        )
        .expect("ok");
        assert_eq!(
            credentials.authorization,
            Some(Authorization::Basic {
                username: "serin".into(),
                password: "pw with spaces ".into(),
            })
        );
    }

    #[test]
    fn a_token_and_basic_auth_together_are_refused_naming_both_keys() {
        assert_eq!(
            refusal(&[
                (TOKEN, b"t"),
                (USERNAME, b"u"),
                (PASSWORD, SECRET_VALUE.as_bytes())
            ]),
            "key \"token\" of Secret shop/thanos-auth and key \"username\" of Secret \
             shop/thanos-auth cannot be used together: give a bearer token or basic auth, not \
             both"
        );
        assert!(refusal(&[(TOKEN, b"t"), (PASSWORD, b"p")]).contains("key \"password\""));
    }

    #[test]
    fn half_of_a_pair_is_refused_naming_the_missing_half() {
        assert_eq!(
            refusal(&[(USERNAME, b"u")]),
            "key \"username\" of Secret shop/thanos-auth needs key \"password\" of Secret \
             shop/thanos-auth too"
        );
        let certs = pem_pair();
        assert_eq!(
            refusal(&[(CERT, certs.cert_pem.as_bytes())]),
            "key \"tls.crt\" of Secret shop/thanos-auth needs key \"tls.key\" of Secret \
             shop/thanos-auth too"
        );
        assert!(refusal(&[(KEY, certs.key_pem.as_bytes())]).starts_with("key \"tls.key\""));
    }

    #[test]
    fn unusable_material_is_named_and_never_quoted() {
        let certs = pem_pair();
        type Keys<'a> = &'a [(&'a str, &'a [u8])];
        let cases: [(Keys<'_>, &str); 5] = [
            (
                &[(CA, SECRET_VALUE.as_bytes())],
                "key \"ca.crt\" of Secret shop/thanos-auth is not a PEM certificate",
            ),
            (
                &[
                    (CERT, certs.cert_pem.as_bytes()),
                    (KEY, SECRET_VALUE.as_bytes()),
                ],
                "key \"tls.key\" of Secret shop/thanos-auth is not a PEM private key (PKCS#8, \
                 PKCS#1 or SEC1)",
            ),
            (
                &[(TOKEN, b"two\nlines")],
                "key \"token\" of Secret shop/thanos-auth holds control characters (a line \
                 break inside?), which an HTTP header cannot carry",
            ),
            (
                &[(TOKEN, b" \n")],
                "key \"token\" of Secret shop/thanos-auth is empty",
            ),
            (
                &[(USERNAME, b"a:b"), (PASSWORD, SECRET_VALUE.as_bytes())],
                "key \"username\" of Secret shop/thanos-auth holds a ':', which basic auth \
                 cannot carry in a username",
            ),
        ];
        for (pairs, expected) in cases {
            let message = refusal(pairs);
            assert_eq!(message, expected);
            assert!(!message.contains(SECRET_VALUE));
        }
    }

    #[test]
    fn a_secret_with_none_of_the_keys_gives_no_credentials() {
        assert_eq!(
            refusal(&[("apikey", b"x")]),
            "Secret shop/thanos-auth holds none of the keys token, username, password, ca.crt, \
             tls.crt, tls.key, so it gives no credentials"
        );
    }

    #[test]
    fn a_ca_and_a_client_certificate_are_kept_as_tls_material() {
        let certs = pem_pair();
        let credentials = Credentials::from_keys(
            &origin(),
            &keys(&[
                (CA, certs.ca_pem.as_bytes()),
                (CERT, certs.cert_pem.as_bytes()),
                (KEY, certs.key_pem.as_bytes()),
            ]),
        )
        .expect("ok");
        assert_eq!(credentials.authorization, None);
        assert_eq!(credentials.tls.ca.as_deref(), Some(certs.ca_pem.as_bytes()));
        assert!(credentials.tls.identity.is_some());
    }

    #[test]
    fn debug_output_says_what_is_set_and_never_a_value() {
        let credentials = Credentials::from_keys(
            &origin(),
            &keys(&[(USERNAME, b"serin"), (PASSWORD, SECRET_VALUE.as_bytes())]),
        )
        .expect("ok");
        let shown = format!("{credentials:?}");
        assert_eq!(
            shown,
            "Credentials { authorization: \"basic auth\", tls: TlsMaterial { ca: false, \
             identity: false } }"
        );
    }

    #[test]
    fn credentials_go_only_over_https() {
        let credentials = Credentials::default();
        assert!(credentials.check_address("https://thanos:10902").is_ok());
        assert!(credentials.check_address("HTTPS://thanos:10902").is_ok());
        assert_eq!(
            credentials
                .check_address("http://thanos:10902")
                .expect_err("refused")
                .to_string(),
            "http://thanos:10902 is not https://: Serin sends credentials only over TLS, never \
             in clear"
        );
    }

    #[test]
    fn the_flags_are_named_as_flags_and_their_files_are_read_again_each_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "first\n").expect("write");
        let files = CredentialFiles {
            bearer_token_file: Some(token.clone()),
            ..CredentialFiles::default()
        };
        let bearer = |files: &CredentialFiles| {
            files
                .read()
                .expect("readable")
                .and_then(|c| c.authorization)
        };
        assert_eq!(bearer(&files), Some(Authorization::Bearer("first".into())));
        std::fs::write(&token, "rotated").expect("write");
        assert_eq!(
            bearer(&files),
            Some(Authorization::Bearer("rotated".into()))
        );

        let with_cert = CredentialFiles {
            client_cert: Some(token.clone()),
            ..files.clone()
        };
        assert_eq!(
            with_cert.read().expect_err("refused").to_string(),
            "--prometheus-client-cert needs --prometheus-client-key too"
        );
        let missing = CredentialFiles {
            ca_file: Some(dir.path().join("nope.crt")),
            ..files
        };
        let message = missing.read().expect_err("refused").to_string();
        assert!(
            message.starts_with("--prometheus-ca-file ") && message.contains("nope.crt"),
            "{message}"
        );
        assert_eq!(CredentialFiles::default().read(), Ok(None));
    }

    struct Secrets(BTreeMap<(String, String), Result<SecretData, String>>);

    impl SecretSource for Secrets {
        fn data(
            &self,
            namespace: &str,
            name: &str,
        ) -> BoxFuture<'static, Result<Option<SecretData>, String>> {
            let found = self
                .0
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
                .transpose();
            Box::pin(async move { found })
        }
    }

    #[tokio::test]
    async fn a_secret_is_read_in_its_namespace_and_a_missing_one_is_named() {
        let source = Secrets(BTreeMap::from([
            (
                ("shop".to_owned(), "thanos-auth".to_owned()),
                Ok(keys(&[(TOKEN, b"abc")])),
            ),
            (
                ("shop".to_owned(), "locked".to_owned()),
                Err("Serin may not read it".to_owned()),
            ),
        ]));
        assert_eq!(
            read_secret(&source, "shop", "thanos-auth")
                .await
                .map(|c| c.authorization),
            Ok(Some(Authorization::Bearer("abc".into())))
        );
        assert_eq!(
            read_secret(&source, "other", "thanos-auth")
                .await
                .expect_err("not there")
                .to_string(),
            "Secret other/thanos-auth does not exist (it is named in the metric's secretRef)"
        );
        assert_eq!(
            read_secret(&source, "shop", "locked")
                .await
                .expect_err("unreadable")
                .to_string(),
            "Secret shop/locked could not be read: Serin may not read it"
        );
    }
}
