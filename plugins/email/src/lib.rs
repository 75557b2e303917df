//! `email`: the first-party channel connector that delivers messages over
//! SMTP (capability `outbound-smtp`) and accepts the e-mail provider's
//! delivery/engagement events as Standard Webhooks-signed JSON (README.md
//! has the full reference).
//!
//! - `deliver`: builds an RFC 5322 message with `mail-builder`: `From` /
//!   `Reply-To` from the configuration, `To` = `message.to`, `Subject`,
//!   `Date` = `message.now`, `Message-ID` derived from `message.id` (the
//!   same on every attempt, so a receiver can drop a duplicate), a text
//!   body, and an HTML alternative when `metadata.html` is a string. The
//!   host submits it; an SMTP 4xx, a timeout or a connection failure is
//!   retryable, a 5xx, a refused destination or a bad configuration is not.
//! - `parse-inbound`: provider events, verified with `inbound_secret` and
//!   parsed by `rapport_plugin_sdk::standard_webhooks` into the host's
//!   built-in `message_<type>` events (the interaction's channel tells
//!   e-mail from other channels).
//!
//! Capabilities: `config`, `outbound-smtp` (the manifest's `allowed_hosts`
//! must list the SMTP server).

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use rapport_plugin_sdk::host::smtp;
use rapport_plugin_sdk::standard_webhooks::{self, Secret};
use rapport_plugin_sdk::{
    ChannelConnector, DeliveryError, InboundError, InboundEvent, InboundRequest, Message, PluginError, Receipt,
    SmtpError, SmtpReply, SmtpSubmission, SmtpTls,
};
use serde::Deserialize;

/// Per-tenant configuration (capability `config`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub smtp_host: String,
    /// Defaults by `tls`: 25 (none), 587 (starttls), 465 (implicit).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `none`, `starttls` (default) or `implicit`.
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// `shop@example.com` or `Shop <shop@example.com>`.
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Per-submission timeout (the host's limit caps it).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// `whsec_<base64>`: verifies the provider's inbound events. Without it
    /// the inbound endpoint refuses everything.
    #[serde(default)]
    pub inbound_secret: Option<String>,
}

fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}

/// A parsed mailbox: optional display name and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

impl Mailbox {
    /// `addr@domain` or `Display Name <addr@domain>`.
    pub fn parse(text: &str) -> Result<Mailbox, String> {
        let text = text.trim();
        if text.contains(|c: char| c.is_control()) {
            return Err(format!("{text:?} contains control characters"));
        }
        let (name, address) = match (text.rfind('<'), text.strip_suffix('>')) {
            (Some(open), Some(rest)) => {
                let name = text[..open].trim().trim_matches('"').trim();
                (
                    (!name.is_empty()).then(|| name.to_owned()),
                    rest[open + 1..].trim().to_owned(),
                )
            }
            _ => (None, text.to_owned()),
        };
        let valid = match address.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !address.contains(|c: char| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
            }
            None => false,
        };
        if valid {
            Ok(Mailbox { name, address })
        } else {
            Err(format!("{text:?} is not an e-mail address"))
        }
    }

    fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("localhost", |(_, d)| d)
    }

    fn header(&self) -> Address<'_> {
        match &self.name {
            Some(name) => Address::new_address(Some(name.as_str()), self.address.as_str()),
            None => Address::new_address(None::<&str>, self.address.as_str()),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
}

impl Settings {
    pub fn load() -> Result<Settings, PluginError> {
        let config: Config = rapport_plugin_sdk::config()?;
        let invalid = PluginError::InvalidConfig;
        if config.smtp_host.trim().is_empty() {
            return Err(invalid("`smtp_host` is empty".into()));
        }
        if config.username.is_some() != config.password.is_some() {
            return Err(invalid("`username` and `password` go together".into()));
        }
        if config.username.is_some() && config.tls == SmtpTls::None {
            return Err(invalid("credentials need `tls` starttls or implicit".into()));
        }
        let from = Mailbox::parse(&config.from).map_err(|e| invalid(format!("`from`: {e}")))?;
        let reply_to = match &config.reply_to {
            Some(r) => Some(Mailbox::parse(r).map_err(|e| invalid(format!("`reply_to`: {e}")))?),
            None => None,
        };
        Ok(Settings { config, from, reply_to })
    }

    fn port(&self) -> u16 {
        self.config.smtp_port.unwrap_or(match self.config.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
        })
    }
}

/// The `Message-ID` of a message (without the angle brackets):
/// `rapport.{id}@{from domain}`, stable across attempts. An id with
/// characters a msg-id may not hold is hex-encoded.
pub fn message_id(message: &Message, from: &Mailbox) -> String {
    format!("rapport.{}@{}", safe_id(&message.id), from.domain())
}

/// `id` if it is made of characters safe in a msg-id and a header, else
/// its bytes in hex (so no id can inject a header line).
fn safe_id(id: &str) -> String {
    let safe = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+=$".contains(c));
    if safe {
        id.to_owned()
    } else {
        id.bytes().map(|b| format!("{b:02x}")).collect()
    }
}

/// The submission a delivery makes (public for tests).
pub fn build_submission(settings: &Settings, message: &Message) -> Result<SmtpSubmission, DeliveryError> {
    let to = Mailbox::parse(&message.to).map_err(|e| DeliveryError::permanent(format!("recipient: {e}")))?;
    let id = message_id(message, &settings.from);
    let mut builder = MessageBuilder::new()
        .from(settings.from.header())
        .to(to.header())
        .message_id(id)
        .date(Date::new(message.now.div_euclid(1000)))
        .header(
            "X-Rapport-Message-Id",
            mail_builder::headers::raw::Raw::new(safe_id(&message.id)),
        )
        .text_body(message.body.as_str());
    if let Some(reply_to) = &settings.reply_to {
        builder = builder.reply_to(reply_to.header());
    }
    if let Some(subject) = &message.subject {
        builder = builder.subject(subject.as_str());
    }
    if let Some(html) = message.metadata.get("html").and_then(|h| h.as_str()) {
        builder = builder.html_body(html);
    }
    let bytes = builder
        .write_to_vec()
        .map_err(|e| DeliveryError::permanent(format!("cannot build the message: {e}")))?;
    let c = &settings.config;
    Ok(SmtpSubmission {
        host: c.smtp_host.trim().to_owned(),
        port: settings.port(),
        tls: c.tls,
        credentials: c.username.clone().zip(c.password.clone()),
        mail_from: settings.from.address.clone(),
        rcpt_to: vec![to.address],
        message: bytes,
        timeout_ms: c.timeout_ms,
    })
}

/// Maps the host's answer to a receipt or a classified failure.
pub fn classify(result: Result<SmtpReply, SmtpError>, message_id: &str) -> Result<Receipt, DeliveryError> {
    match result {
        Ok(reply) => Ok(Receipt {
            provider_id: Some(format!("<{message_id}>")),
            detail: Some(format!("SMTP {} {}", reply.code, reply.text)),
        }),
        Err(SmtpError::Transient(r)) => Err(DeliveryError::retryable(format!("SMTP {} {}", r.code, r.text))),
        Err(SmtpError::Permanent(r)) => Err(DeliveryError::permanent(format!("SMTP {} {}", r.code, r.text))),
        Err(SmtpError::Timeout) => Err(DeliveryError::retryable("timeout")),
        Err(SmtpError::Connection(m)) => Err(DeliveryError::retryable(format!("connection failed: {m}"))),
        Err(SmtpError::Denied(m)) => Err(DeliveryError::permanent(m)),
        Err(SmtpError::InvalidRequest(m)) => Err(DeliveryError::permanent(format!("invalid request: {m}"))),
    }
}

pub struct Email;

impl ChannelConnector for Email {
    fn deliver(message: &Message) -> Result<Receipt, DeliveryError> {
        let settings = Settings::load().map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let submission = build_submission(&settings, message)?;
        classify(smtp::send(&submission), &message_id(message, &settings.from))
    }

    fn parse_inbound(request: &InboundRequest) -> Result<Vec<InboundEvent>, InboundError> {
        let cannot =
            |why: String| InboundError::Unauthenticated(format!("the connector cannot verify signatures: {why}"));
        let config: Config = rapport_plugin_sdk::config().map_err(|e| cannot(e.to_string()))?;
        let secret = config
            .inbound_secret
            .as_deref()
            .ok_or_else(|| cannot("no `inbound_secret` is configured".into()))?;
        let secret = Secret::parse(secret).map_err(cannot)?;
        standard_webhooks::parse_inbound(&secret, request)
    }
}

rapport_plugin_sdk::export_channel_connector!(Email);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use rapport_plugin_sdk::testing;
    use serde_json::json;

    use super::*;

    fn message(to: &str, metadata: serde_json::Value) -> Message {
        Message {
            id: "0193-abc".into(),
            customer_id: "c-1".into(),
            channel: "email".into(),
            to: to.into(),
            subject: Some("Your points".into()),
            body: "You have 120 points.".into(),
            metadata,
            attempt: 1,
            now: 1_700_000_000_123,
        }
    }

    fn config() -> serde_json::Value {
        json!({"smtp_host": "smtp.example.com", "tls": "starttls", "username": "u", "password": "p",
               "from": "Shop <shop@example.com>", "reply_to": "help@example.com"})
    }

    fn capture(result: Result<SmtpReply, SmtpError>) -> Rc<RefCell<Vec<SmtpSubmission>>> {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        testing::set_smtp_handler(move |s| {
            log.borrow_mut().push(s.clone());
            result.clone()
        });
        seen
    }

    #[test]
    fn builds_a_complete_message() {
        testing::reset();
        testing::set_config(config());
        let seen = capture(Ok(SmtpReply {
            code: 250,
            text: "OK queued".into(),
        }));
        let receipt = Email::deliver(&message("Ann <ann@example.org>", json!({}))).unwrap();
        assert_eq!(receipt.provider_id.as_deref(), Some("<rapport.0193-abc@example.com>"));
        assert_eq!(receipt.detail.as_deref(), Some("SMTP 250 OK queued"));
        let s = seen.borrow()[0].clone();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("smtp.example.com", 587, SmtpTls::Starttls)
        );
        assert_eq!(s.credentials, Some(("u".into(), "p".into())));
        assert_eq!(s.mail_from, "shop@example.com");
        assert_eq!(s.rcpt_to, vec!["ann@example.org".to_string()]);
        let text = String::from_utf8(s.message).unwrap();
        for needle in [
            "From: \"Shop\" <shop@example.com>\r\n",
            "To: \"Ann\" <ann@example.org>\r\n",
            "Reply-To: <help@example.com>\r\n",
            "Subject: Your points\r\n",
            "Message-ID: <rapport.0193-abc@example.com>\r\n",
            "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
            "X-Rapport-Message-Id: 0193-abc\r\n",
            "Content-Type: text/plain; charset=\"utf-8\"",
            "You have 120 points.",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("text/html"));
    }

    #[test]
    fn html_metadata_adds_an_alternative() {
        testing::reset();
        testing::set_config(config());
        let seen = capture(Ok(SmtpReply {
            code: 250,
            text: "OK".into(),
        }));
        Email::deliver(&message(
            "ann@example.org",
            json!({"html": "<p>You have <b>120</b></p>"}),
        ))
        .unwrap();
        let text = String::from_utf8(seen.borrow()[0].message.clone()).unwrap();
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(text.contains("text/html"), "{text}");
        assert!(text.contains("<p>You have <b>120</b></p>"), "{text}");
    }

    #[test]
    fn the_message_id_is_stable_and_safe() {
        let from = Mailbox::parse("shop@example.com").unwrap();
        let mut m = message("a@b.c", json!({}));
        let first = message_id(&m, &from);
        m.attempt = 3;
        m.now += 60_000;
        assert_eq!(message_id(&m, &from), first);
        m.id = "a b>".into();
        assert_eq!(message_id(&m, &from), "rapport.6120623e@example.com");
    }

    #[test]
    fn failures_are_classified() {
        testing::reset();
        testing::set_config(config());
        let reply = |code| SmtpReply { code, text: "x".into() };
        for (result, retry) in [
            (Err(SmtpError::Transient(reply(451))), true),
            (Err(SmtpError::Timeout), true),
            (Err(SmtpError::Connection("refused".into())), true),
            (Err(SmtpError::Permanent(reply(550))), false),
            (Err(SmtpError::Denied("no".into())), false),
            (Err(SmtpError::InvalidRequest("big".into())), false),
        ] {
            capture(result.clone());
            let e = Email::deliver(&message("ann@example.org", json!({}))).unwrap_err();
            assert_eq!(e.retryable, retry, "{result:?}: {e}");
        }
        let e = Email::deliver(&message("not-an-address", json!({}))).unwrap_err();
        assert!(!e.retryable && e.message.starts_with("recipient"), "{e}");
    }

    #[test]
    fn bad_configurations_are_permanent() {
        testing::reset();
        for c in [
            json!({}),
            json!({"smtp_host": "h", "from": "nope"}),
            json!({"smtp_host": "h", "from": "a@b.c", "username": "u"}),
            json!({"smtp_host": "h", "from": "a@b.c", "tls": "ssl"}),
            json!({"smtp_host": " ", "from": "a@b.c"}),
            json!({"smtp_host": "h", "from": "a@b.c", "tls": "none", "username": "u", "password": "p"}),
        ] {
            testing::set_config(c.clone());
            let e = Email::deliver(&message("ann@example.org", json!({}))).unwrap_err();
            assert!(!e.retryable, "{c}: {e}");
        }
    }

    #[test]
    fn inbound_events_are_verified_with_the_inbound_secret() {
        testing::reset();
        let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let secret = Secret::parse(key).unwrap();
        let body =
            br#"[{"id":"e1","type":"opened","customer":"EXT-1"},{"id":"e2","type":"bounced","customer":"EXT-2"}]"#;
        let now = 1_700_000_000;
        let request = InboundRequest {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![
                ("webhook-id".into(), "msg_1".into()),
                ("webhook-timestamp".into(), now.to_string()),
                ("webhook-signature".into(), secret.sign("msg_1", now, body)),
            ],
            body: body.to_vec(),
            received_at: now * 1000,
        };
        let mut c = config();
        testing::set_config(c.clone());
        assert!(
            matches!(Email::parse_inbound(&request), Err(InboundError::Unauthenticated(m)) if m.contains("inbound_secret"))
        );
        c["inbound_secret"] = json!(key);
        testing::set_config(c);
        let events = Email::parse_inbound(&request).unwrap();
        let kinds: Vec<_> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.idempotency_key.as_str()))
            .collect();
        assert_eq!(kinds, [("message_opened", "e1"), ("message_bounced", "e2")]);
    }
}
