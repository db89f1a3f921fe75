//! The one place alerts read a Secret: the incoming-webhook URL under the key `address` of a
//! Secret in Serin's own namespace (a Role there grants `get` on Secrets, nothing more).
//! Messages name the Secret and the key, never the value.

use crate::analysis::credentials::SecretSource;

/// The key of an alert's Secret that holds its address (Flagger's too).
pub const ADDRESS_KEY: &str = "address";

/// The longest address taken: longer is no incoming-webhook URL.
pub const MAX_ADDRESS: usize = 2048;

/// Why an alert's address could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} does not exist")]
    Missing { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {ADDRESS_KEY:?}")]
    NoAddress { namespace: String, name: String },
    #[error(
        "Secret {namespace}/{name}: key {ADDRESS_KEY:?} is not an http or https URL of at most \
         {MAX_ADDRESS} bytes"
    )]
    BadAddress { namespace: String, name: String },
    #[error("Secret {namespace}/{name} could not be read: {reason}")]
    Api {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// The address in Secret `namespace/name`, read through the same [`SecretSource`] as the
/// credentials of metrics.
pub async fn address(
    source: &dyn SecretSource,
    namespace: &str,
    name: &str,
) -> Result<String, SecretError> {
    let (ns, n) = (namespace.to_owned(), name.to_owned());
    let data = match source.data(namespace, name).await {
        Ok(Some(data)) => data,
        Ok(None) => {
            return Err(SecretError::Missing {
                namespace: ns,
                name: n,
            });
        }
        Err(reason) => {
            return Err(SecretError::Api {
                namespace: ns,
                name: n,
                reason,
            });
        }
    };
    let Some(bytes) = data.get(ADDRESS_KEY) else {
        return Err(SecretError::NoAddress {
            namespace: ns,
            name: n,
        });
    };
    parse_address(bytes).ok_or(SecretError::BadAddress {
        namespace: ns,
        name: n,
    })
}

/// The address in a Secret's value: UTF-8, trimmed (a trailing newline from `echo` is
/// common), an `http(s)` URL with a host, at most [`MAX_ADDRESS`] bytes.
pub fn parse_address(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() > MAX_ADDRESS {
        return None;
    }
    let url = reqwest::Url::parse(text).ok()?;
    let web = matches!(url.scheme(), "http" | "https") && url.host_str().is_some();
    web.then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_trimmed_and_must_be_a_web_url() {
        assert_eq!(
            parse_address(b"https://chat.example/hook/abc\n").as_deref(),
            Some("https://chat.example/hook/abc")
        );
        assert_eq!(parse_address(b"chat.example/hook"), None);
        assert_eq!(parse_address(b"ftp://chat.example/hook"), None);
        assert_eq!(parse_address(&[0xff, 0xfe]), None);
        let long = format!("https://chat.example/{}", "a".repeat(MAX_ADDRESS));
        assert_eq!(parse_address(long.as_bytes()), None);
    }

    #[test]
    fn messages_name_the_secret_and_never_hold_a_value() {
        let error = SecretError::BadAddress {
            namespace: "serin-system".into(),
            name: "slack".into(),
        };
        assert_eq!(
            error.to_string(),
            "Secret serin-system/slack: key \"address\" is not an http or https URL of at most \
             2048 bytes"
        );
    }
}
