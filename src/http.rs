//! Outbound HTTP for the edges that call out of the cluster's API: [`crate::metrics`]
//! (Prometheus) and [`crate::hooks`] (AnalysisTemplate webhooks). One client for both, and
//! answers read only up to a bound, so a misbehaving server cannot make Serin buffer gigabytes.

/// The HTTP client for Prometheus and webhooks. reqwest is built without a crypto provider of
/// its own (it would panic on the first client); this installs Serin's one provider first.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    crate::server::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("serin/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The body of `response`, cut at `limit` bytes; `true` when there was more.
pub(crate) async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The start of a body for a message: at most `max` bytes of text on one line, `…` when cut
/// here or when `more` says the body went on.
pub(crate) fn snippet(body: &[u8], max: usize, more: bool) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() <= max {
        return match more {
            true => format!("{text}…"),
            false => text,
        };
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An error with its causes, `outer: inner: innermost`, for messages (reqwest's own Display
/// stops at "error sending request").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest sometimes repeat their source in their own message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Serves `app` on a free loopback port for tests; its base URL, `http://127.0.0.1:PORT`.
#[cfg(test)]
pub(crate) async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_keeps_short_bodies_whole_on_one_line() {
        assert_eq!(
            snippet(b"  no\n  such   canary \n", 200, false),
            "no such canary"
        );
    }

    #[test]
    fn snippet_cuts_long_bodies_at_a_character_boundary() {
        let body = "é".repeat(150); // 300 bytes
        let cut = snippet(body.as_bytes(), 201, false);
        assert_eq!(cut, format!("{}…", "é".repeat(100)));
    }

    #[test]
    fn snippet_marks_a_body_that_went_on() {
        assert_eq!(snippet(b"first part", 200, true), "first part…");
    }

    #[test]
    fn snippet_survives_invalid_utf8() {
        assert_eq!(snippet(&[b'o', b'k', 0xff], 200, false), "ok\u{fffd}");
    }
}
