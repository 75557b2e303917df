//! Capability `outbound-http` (channel connectors): HTTP(S) requests to the
//! manifest's `allowed_hosts` only, with a timeout and a response-size cap.
//! HTTPS goes through rustls with the bundled Mozilla roots (webpki-roots);
//! a certificate that does not chain to them (self-signed, expired, wrong
//! name) is a `connection` error naming the TLS failure.
//!
//! Which hosts: [`HostPattern`] (`runtime/host_pattern.rs`), the one
//! definition of `allowed_hosts`; without a port only the scheme's default
//! port is allowed. Redirects are not followed (the client is built with
//! `Policy::none()`): a 3xx could point anywhere. Anything else is answered
//! `http-error::denied` without touching the network.

use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::contract_v0_1_0::rapport::crm::outbound_http::{self, HttpError, Request, Response};
use crate::runtime::host_pattern::{HTTP_PORTS, HostPattern};
use crate::runtime::host_state::HostState;

/// A connector's outbound policy, built at load from its manifest entry.
#[derive(Debug)]
pub struct HttpPolicy {
    pub allowed: Vec<HostPattern>,
    pub client: reqwest::Client,
    pub max_timeout: Duration,
    pub max_response_bytes: usize,
}

impl HttpPolicy {
    /// Why `url` may not be requested, if it may not.
    pub fn check(&self, url: &reqwest::Url) -> Result<(), String> {
        let Some(&(_, default_port)) = HTTP_PORTS.iter().find(|(scheme, _)| *scheme == url.scheme()) else {
            return Err(format!("scheme `{}` is not allowed", url.scheme()));
        };
        let host = url.host_str().ok_or("URL has no host")?.to_ascii_lowercase();
        let port = url.port().unwrap_or(default_port);
        if self.allowed.iter().any(|p| p.matches(&host, port, &[default_port])) {
            Ok(())
        } else {
            Err(format!("{host}:{port} is not in the plugin's allowed hosts"))
        }
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    outbound_http::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl outbound_http::Host for HostState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let Some(policy) = self.http.clone() else {
            return Ok(Err(HttpError::Denied(
                "outbound-http is not configured for this plugin".into(),
            )));
        };
        // Never outlive the call's own deadline.
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        Ok(send(&policy, request, remaining).await)
    }
}

async fn send(policy: &HttpPolicy, request: Request, remaining: Duration) -> Result<Response, HttpError> {
    let url = reqwest::Url::parse(&request.url).map_err(|e| HttpError::InvalidRequest(format!("bad URL: {e}")))?;
    policy.check(&url).map_err(HttpError::Denied)?;
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => reqwest::Method::GET,
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        "PATCH" => reqwest::Method::PATCH,
        "DELETE" => reqwest::Method::DELETE,
        other => {
            return Err(HttpError::InvalidRequest(format!("method `{other}` is not allowed")));
        }
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &request.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("bad header name `{name}`")))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| HttpError::InvalidRequest(format!("bad value for header `{name}`")))?;
        headers.append(name, value);
    }
    let mut timeout = policy.max_timeout.min(remaining);
    if let Some(ms) = request.timeout_ms {
        timeout = timeout.min(Duration::from_millis(u64::from(ms)));
    }
    let result = policy
        .client
        .request(method, url)
        .headers(headers)
        .body(request.body)
        .timeout(timeout)
        .send()
        .await;
    let mut response = result.map_err(classify)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if response
        .content_length()
        .is_some_and(|n| n > policy.max_response_bytes as u64)
    {
        return Err(HttpError::ResponseTooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > policy.max_response_bytes {
            return Err(HttpError::ResponseTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, headers, body })
}

fn classify(e: reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::Timeout
    } else {
        HttpError::Connection(error_chain(&e))
    }
}

/// The error and its sources, joined: reqwest's own message ("error sending
/// request for url ...") hides the cause, e.g. the TLS layer's "invalid peer
/// certificate: UnknownIssuer", which is what an operator needs to see.
/// Each level contributes only its own words (some errors repeat their
/// source's text in their own), and repeated words are said once.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        let source = err.source();
        let own = match source.map(|s| s.to_string()) {
            Some(inner) => text
                .strip_suffix(&inner)
                .map(|t| t.trim_end_matches([':', ' ']).to_owned())
                .unwrap_or(text),
            None => text,
        };
        if !own.is_empty() && parts.last() != Some(&own) {
            parts.push(own);
        }
        current = source;
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> HttpPolicy {
        HttpPolicy {
            allowed: hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(),
            client: reqwest::Client::new(),
            max_timeout: Duration::from_secs(1),
            max_response_bytes: 10,
        }
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // Like lettre: its own words, then its source's.
            match &self.1 {
                Some(inner) => write!(f, "{}: {inner}", self.0),
                None => f.write_str(self.0),
            }
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        let e = Layer(
            "Connection error",
            Some(Box::new(Layer(
                "Connection error",
                Some(Box::new(Layer("invalid peer certificate: UnknownIssuer", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "Connection error: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn host_patterns() {
        let p = policy(&["api.example.com", "*.hooks.io", "127.0.0.1:8080"]);
        let ok = |u: &str| p.check(&reqwest::Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://api.example.com/x"));
        assert!(ok("http://API.example.com/x"));
        assert!(!ok("https://api.example.com:8443/x"));
        assert!(!ok("https://evil.com/api.example.com"));
        assert!(!ok("https://api.example.com.evil.com/"));
        assert!(ok("https://a.hooks.io/"));
        assert!(ok("https://a.b.hooks.io/"));
        assert!(!ok("https://hooks.io/"));
        assert!(!ok("https://xhooks.io/"));
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(!ok("http://127.0.0.1/"));
        assert!(!ok("file:///etc/passwd"));
    }
}
