//! `allowedWebhookHosts`: host names and `*.` wildcards that webhook URLs must match.

/// The host of an `http(s)` URL, lower case; `None` when it has none.
pub(super) fn url_host(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    matches!(parsed.scheme(), "http" | "https")
        .then(|| parsed.host_str().map(str::to_ascii_lowercase))
        .flatten()
}

/// Whether `host` is allowed by one of `patterns`: an exact host, or `*.domain`, which covers
/// every name below `domain` (`a.domain`, `a.b.domain`) but not `domain` itself.
pub fn host_allowed(patterns: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => host == pattern,
        }
    })
}

/// A pattern is a host name (or IP address), optionally behind `*.`; no scheme, port or path.
pub(super) fn check_pattern(pattern: &str) -> Result<(), String> {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    match valid {
        true => Ok(()),
        false => Err(format!(
            "{pattern:?} is not a host pattern: a host name such as hooks.example.com, or \
             *.example.com for every host below example.com (no scheme, port or path)"
        )),
    }
}
