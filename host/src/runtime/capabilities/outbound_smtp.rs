//! Capability `outbound-smtp` (channel connectors): submits a message the
//! guest built to an SMTP server in the manifest's `allowed_hosts`, with
//! `lettre` on tokio (TLS through rustls with the bundled Mozilla roots).
//!
//! The same host patterns as `outbound-http` ([`HostPattern`], the one
//! definition of `allowed_hosts`); a pattern without a port allows
//! the SMTP ports 25 (relay), 465 (implicit TLS) and 587 (submission), so
//! `smtp.example.com` does not open `smtp.example.com:22`. The destination
//! is checked before any DNS lookup or connection. Each submission uses its
//! own connection (lettre's pool is not compiled in), so nothing of one
//! tenant's session can leak into another's.
//!
//! Bounds: the whole exchange must finish within the plugin's
//! `smtp_timeout_ms` (and the call's own deadline, and the guest's
//! `timeout-ms` if smaller); the message may not exceed
//! `smtp_max_message_bytes`. Errors keep the server's reply: a 4xx is
//! `transient`, a 5xx `permanent`, each with its code and text.
//! Credentials are refused with `tls: none`: a password never crosses the
//! network in clear text.

use std::str::FromStr;
use std::time::{Duration, Instant};

use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use wasmtime::component::{HasSelf, Linker};

use super::outbound_http::error_chain;
use crate::runtime::contract_v0_1_0::rapport::crm::outbound_smtp::{self, Reply, SmtpError, Submission, TlsMode};
use crate::runtime::host_pattern::{HostPattern, SMTP_PORTS};
use crate::runtime::host_state::HostState;

/// The most recipients one submission may have.
const MAX_RECIPIENTS: usize = 100;

/// A connector's SMTP policy, built at load from its manifest entry.
#[derive(Debug)]
pub struct SmtpPolicy {
    pub allowed: Vec<HostPattern>,
    pub max_timeout: Duration,
    pub max_message_bytes: usize,
}

impl SmtpPolicy {
    /// Why `host:port` may not be used, if it may not.
    pub fn check(&self, host: &str, port: u16) -> Result<(), String> {
        let host = host.to_ascii_lowercase();
        if self.allowed.iter().any(|p| p.matches(&host, port, &SMTP_PORTS)) {
            Ok(())
        } else {
            Err(format!("{host}:{port} is not in the plugin's allowed hosts"))
        }
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    outbound_smtp::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl outbound_smtp::Host for HostState {
    async fn send(&mut self, submission: Submission) -> wasmtime::Result<Result<Reply, SmtpError>> {
        let Some(policy) = self.smtp.clone() else {
            return Ok(Err(SmtpError::Denied(
                "outbound-smtp is not configured for this plugin".into(),
            )));
        };
        // Never outlive the call's own deadline.
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        Ok(send(&policy, submission, remaining).await)
    }
}

/// Validates, then submits. Public for the capability's own tests.
pub async fn send(policy: &SmtpPolicy, submission: Submission, remaining: Duration) -> Result<Reply, SmtpError> {
    let host = submission.host.trim();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@' || c == ':') {
        return Err(SmtpError::InvalidRequest(format!(
            "bad SMTP host `{}`",
            submission.host
        )));
    }
    // The allow-list first: a refused destination learns nothing else.
    policy.check(host, submission.port).map_err(SmtpError::Denied)?;
    if submission.message.len() > policy.max_message_bytes {
        return Err(SmtpError::InvalidRequest(format!(
            "the message is {} bytes, over the {}-byte limit",
            submission.message.len(),
            policy.max_message_bytes
        )));
    }
    if submission.credentials.is_some() && submission.tls == TlsMode::None {
        // A password must never cross the network in clear text.
        return Err(SmtpError::InvalidRequest(
            "credentials need tls `starttls` or `implicit`".into(),
        ));
    }
    let envelope = envelope(&submission)?;
    let mut timeout = policy.max_timeout.min(remaining);
    if let Some(ms) = submission.timeout_ms {
        timeout = timeout.min(Duration::from_millis(u64::from(ms)));
    }
    let tls = || TlsParameters::new(host.to_owned()).map_err(|e| SmtpError::Connection(error_chain(&e)));
    let tls = match submission.tls {
        TlsMode::None => Tls::None,
        // Required, not opportunistic: a server (or a man in the middle)
        // that drops STARTTLS must not downgrade the session to plain text.
        TlsMode::Starttls => Tls::Required(tls()?),
        TlsMode::Implicit => Tls::Wrapper(tls()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(submission.port)
        .tls(tls)
        // Per I/O operation; the overall bound is the tokio timeout below.
        .timeout(Some(timeout));
    if let Some(c) = submission.credentials {
        builder = builder.credentials(Credentials::new(c.username, c.password));
    }
    let transport = builder.build();
    match tokio::time::timeout(timeout, transport.send_raw(&envelope, &submission.message)).await {
        Err(_) => Err(SmtpError::Timeout),
        Ok(Ok(response)) => Ok(Reply {
            code: code_number(&response.code().to_string()),
            text: response.message().collect::<Vec<_>>().join("\n"),
        }),
        Ok(Err(e)) => Err(classify(&e)),
    }
}

fn envelope(submission: &Submission) -> Result<Envelope, SmtpError> {
    let address = |text: &str| {
        Address::from_str(text.trim()).map_err(|e| SmtpError::InvalidRequest(format!("bad address `{text}`: {e}")))
    };
    if submission.rcpt_to.is_empty() {
        return Err(SmtpError::InvalidRequest("no recipients".into()));
    }
    if submission.rcpt_to.len() > MAX_RECIPIENTS {
        return Err(SmtpError::InvalidRequest(format!(
            "{} recipients; at most {MAX_RECIPIENTS}",
            submission.rcpt_to.len()
        )));
    }
    let from = address(&submission.mail_from)?;
    let to = submission
        .rcpt_to
        .iter()
        .map(|r| address(r))
        .collect::<Result<Vec<_>, _>>()?;
    Envelope::new(Some(from), to).map_err(|e| SmtpError::InvalidRequest(e.to_string()))
}

/// lettre renders a reply code as its three digits.
fn code_number(text: &str) -> u16 {
    text.parse().unwrap_or(0)
}

fn classify(e: &lettre::transport::smtp::Error) -> SmtpError {
    if e.is_timeout() {
        return SmtpError::Timeout;
    }
    if let Some(code) = e.status() {
        // For negative replies lettre's source is the reply text.
        let reply = Reply {
            code: code_number(&code.to_string()),
            text: std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default(),
        };
        if e.is_transient() {
            return SmtpError::Transient(reply);
        }
        if e.is_permanent() {
            return SmtpError::Permanent(reply);
        }
    }
    SmtpError::Connection(error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> SmtpPolicy {
        SmtpPolicy {
            allowed: hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(),
            max_timeout: Duration::from_secs(1),
            max_message_bytes: 100,
        }
    }

    #[test]
    fn host_patterns_default_to_the_smtp_ports() {
        let p = policy(&["smtp.example.com", "*.mail.io", "127.0.0.1:2525"]);
        assert!(p.check("smtp.example.com", 25).is_ok());
        assert!(p.check("SMTP.example.com", 465).is_ok());
        assert!(p.check("smtp.example.com", 587).is_ok());
        assert!(p.check("smtp.example.com", 22).is_err());
        assert!(p.check("smtp.example.com", 2525).is_err());
        assert!(p.check("a.mail.io", 587).is_ok());
        assert!(p.check("mail.io", 587).is_err());
        assert!(p.check("127.0.0.1", 2525).is_ok());
        assert!(p.check("127.0.0.1", 25).is_err());
        assert!(p.check("evil.com", 25).is_err());
    }

    fn submission(host: &str, port: u16) -> Submission {
        Submission {
            host: host.into(),
            port,
            tls: TlsMode::None,
            credentials: None,
            mail_from: "shop@example.com".into(),
            rcpt_to: vec!["ann@example.org".into()],
            message: b"Subject: hi\r\n\r\nhello\r\n".to_vec(),
            timeout_ms: None,
        }
    }

    #[tokio::test]
    async fn refusals_happen_before_any_connection() {
        let p = policy(&["127.0.0.1:2525"]);
        let second = Duration::from_secs(1);
        assert_eq!(
            send(&p, submission("evil.com", 25), second).await,
            Err(SmtpError::Denied(
                "evil.com:25 is not in the plugin's allowed hosts".into()
            ))
        );
        assert!(matches!(
            send(&p, submission("a b", 25), second).await,
            Err(SmtpError::InvalidRequest(_))
        ));
        let mut big = submission("127.0.0.1", 2525);
        big.message = vec![b'x'; 101];
        assert!(
            matches!(send(&p, big, second).await, Err(SmtpError::InvalidRequest(m)) if m.contains("over the 100-byte limit"))
        );
        let mut nobody = submission("127.0.0.1", 2525);
        nobody.rcpt_to.clear();
        assert_eq!(
            send(&p, nobody, second).await,
            Err(SmtpError::InvalidRequest("no recipients".into()))
        );
        let mut clear = submission("127.0.0.1", 2525);
        clear.credentials = Some(outbound_smtp::Credentials {
            username: "u".into(),
            password: "p".into(),
        });
        assert_eq!(
            send(&p, clear, second).await,
            Err(SmtpError::InvalidRequest(
                "credentials need tls `starttls` or `implicit`".into()
            ))
        );
        let mut bad = submission("127.0.0.1", 2525);
        bad.mail_from = "not an address".into();
        assert!(matches!(send(&p, bad, second).await, Err(SmtpError::InvalidRequest(m)) if m.contains("bad address")));
    }
}
