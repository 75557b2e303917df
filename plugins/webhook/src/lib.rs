//! `webhook`: the first-party channel connector that POSTs each message as
//! JSON signed per Standard Webhooks, and accepts delivery/engagement
//! events signed the same way (README.md has the full reference).
//!
//! - `deliver`: `POST {url}` with the [`Payload`] and the headers
//!   `webhook-id` (= `message.id`, stable across retries, so receivers can
//!   drop duplicates), `webhook-timestamp` (= `message.now` in seconds) and
//!   `webhook-signature` (`v1,<base64 HMAC-SHA256>`). 2xx is a receipt;
//!   408, 429, 5xx, timeouts and connection failures are retryable;
//!   anything else (other 4xx, a refused destination, a bad configuration)
//!   is permanent.
//! - `parse-inbound`: verifies the Standard Webhooks signature with the same
//!   secret and turns the JSON events into `message_<type>` events
//!   (`rapport_plugin_sdk::standard_webhooks`).
//!
//! Capabilities: `config`, `outbound-http` (the manifest's `allowed_hosts`
//! must list the receivers).

use std::collections::BTreeMap;

use rapport_plugin_sdk::host::http;
use rapport_plugin_sdk::standard_webhooks::{self, Secret};
use rapport_plugin_sdk::{
    ChannelConnector, DeliveryError, HttpError, HttpRequest, InboundError, InboundEvent, InboundRequest, Message,
    PluginError, Receipt,
};
use serde::{Deserialize, Serialize};

/// The event type of every delivery.
pub const EVENT_TYPE: &str = "message.created";

/// Headers the connector sets itself; the configuration may not override them.
const RESERVED_HEADERS: [&str; 6] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
];

/// Per-tenant configuration (capability `config`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default destination; a `message.to` that is an http(s) URL wins.
    #[serde(default)]
    pub url: Option<String>,
    /// `whsec_<base64>`: signs deliveries and verifies inbound events.
    pub secret: String,
    /// Extra headers on every delivery (e.g. an API key of the receiver).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout (the host's limit caps it).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

impl Config {
    /// Reads and validates the calling tenant's configuration.
    pub fn load() -> Result<(Config, Secret), PluginError> {
        let config: Config = rapport_plugin_sdk::config()?;
        let secret = Secret::parse(&config.secret).map_err(PluginError::InvalidConfig)?;
        if let Some(url) = &config.url
            && !is_http_url(url)
        {
            return Err(PluginError::InvalidConfig(format!(
                "`url` {url:?} is not an http(s) URL"
            )));
        }
        if let Some(name) = config
            .headers
            .keys()
            .find(|n| RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(n)))
        {
            return Err(PluginError::InvalidConfig(format!(
                "header `{name}` is set by the connector and cannot be configured"
            )));
        }
        Ok((config, secret))
    }
}

fn is_http_url(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// The JSON body of a delivery, following the Standard Webhooks payload
/// shape (`type`, `timestamp`, `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// Always [`EVENT_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// `message.now`, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    pub data: PayloadData,
}

/// The message itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadData {
    /// `message.id`: the same on every attempt (also `webhook-id`).
    pub id: String,
    pub customer_id: String,
    pub channel: String,
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    pub metadata: serde_json::Value,
    /// 1 on the first attempt.
    pub attempt: u32,
}

impl Payload {
    pub fn new(message: &Message) -> Payload {
        Payload {
            kind: EVENT_TYPE.to_owned(),
            timestamp: standard_webhooks::format_rfc3339_ms(message.now),
            data: PayloadData {
                id: message.id.clone(),
                customer_id: message.customer_id.clone(),
                channel: message.channel.clone(),
                to: message.to.clone(),
                subject: message.subject.clone(),
                body: message.body.clone(),
                metadata: message.metadata.clone(),
                attempt: message.attempt,
            },
        }
    }
}

/// The request a delivery sends (public for tests and for the README's
/// examples).
pub fn build_request(config: &Config, secret: &Secret, message: &Message) -> Result<HttpRequest, DeliveryError> {
    let url = if is_http_url(&message.to) {
        message.to.clone()
    } else {
        config.url.clone().ok_or_else(|| {
            DeliveryError::permanent(format!(
                "no destination: `to` {:?} is not an http(s) URL and no `url` is configured",
                message.to
            ))
        })?
    };
    let body = serde_json::to_vec(&Payload::new(message))
        .map_err(|e| DeliveryError::permanent(format!("cannot serialise the payload: {e}")))?;
    let timestamp = message.now.div_euclid(1000);
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), "rapport-webhook/0.1".to_owned()),
        ("webhook-id".to_owned(), message.id.clone()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        (
            "webhook-signature".to_owned(),
            secret.sign(&message.id, timestamp, &body),
        ),
    ];
    headers.extend(config.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(HttpRequest {
        method: "POST".to_owned(),
        url,
        headers,
        body,
        timeout_ms: config.timeout_ms,
    })
}

/// Maps the host's answer to a receipt or a classified failure.
pub fn classify(result: Result<rapport_plugin_sdk::HttpResponse, HttpError>) -> Result<Receipt, DeliveryError> {
    match result {
        Ok(response) => match response.status {
            200..=299 => Ok(Receipt {
                provider_id: None,
                detail: Some(format!("HTTP {}", response.status)),
            }),
            408 | 429 | 500..=599 => Err(DeliveryError::retryable(format!("HTTP {}", response.status))),
            400..=499 => Err(DeliveryError::permanent(format!("HTTP {}", response.status))),
            // Redirects are not followed (a 3xx could point anywhere).
            status => Err(DeliveryError::permanent(format!("unexpected HTTP {status}"))),
        },
        Err(HttpError::Timeout) => Err(DeliveryError::retryable("timeout".to_owned())),
        Err(HttpError::Connection(m)) => Err(DeliveryError::retryable(format!("connection failed: {m}"))),
        // The receiver answered, but more than the host accepts: it may
        // have taken the message, and `webhook-id` lets it drop a repeat.
        Err(HttpError::ResponseTooLarge) => Err(DeliveryError::retryable("response too large".to_owned())),
        Err(HttpError::Denied(m)) => Err(DeliveryError::permanent(m)),
        Err(HttpError::InvalidRequest(m)) => Err(DeliveryError::permanent(format!("invalid request: {m}"))),
    }
}

pub struct Webhook;

impl ChannelConnector for Webhook {
    fn deliver(message: &Message) -> Result<Receipt, DeliveryError> {
        let (config, secret) = Config::load().map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let request = build_request(&config, &secret, message)?;
        classify(http::send(&request))
    }

    fn parse_inbound(request: &InboundRequest) -> Result<Vec<InboundEvent>, InboundError> {
        let (_, secret) = Config::load().map_err(|e| {
            // Without a usable secret nothing can be verified: refuse as
            // unauthenticated (401) rather than accept unsigned events.
            InboundError::Unauthenticated(format!("the connector cannot verify signatures: {e}"))
        })?;
        standard_webhooks::parse_inbound(&secret, request)
    }
}

rapport_plugin_sdk::export_channel_connector!(Webhook);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use rapport_plugin_sdk::HttpResponse;
    use rapport_plugin_sdk::testing;
    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn message(to: &str) -> Message {
        Message {
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into(),
            customer_id: "c-1".into(),
            channel: "webhook".into(),
            to: to.into(),
            subject: Some("Hi".into()),
            body: "Hello".into(),
            metadata: json!({"campaign": "spring"}),
            attempt: 2,
            now: 1_614_265_330_999,
        }
    }

    fn respond(status: u16) -> Rc<RefCell<Vec<HttpRequest>>> {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        testing::set_http_handler(move |r| {
            log.borrow_mut().push(r.clone());
            Ok(HttpResponse {
                status,
                headers: vec![],
                body: vec![],
            })
        });
        seen
    }

    fn header<'a>(r: &'a HttpRequest, name: &str) -> &'a str {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    #[test]
    fn delivers_a_signed_payload_to_the_configured_url() {
        testing::reset();
        testing::set_config(
            json!({"url": "https://hooks.example.com/in", "secret": SECRET, "headers": {"x-api-key": "k1"}}),
        );
        let seen = respond(204);
        let receipt = Webhook::deliver(&message("ann@example.com")).unwrap();
        assert_eq!(receipt.detail.as_deref(), Some("HTTP 204"));
        let sent = seen.borrow();
        let r = &sent[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "https://hooks.example.com/in");
        assert_eq!(header(r, "webhook-id"), "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(header(r, "webhook-timestamp"), "1614265330");
        assert_eq!(header(r, "x-api-key"), "k1");
        assert_eq!(header(r, "content-type"), "application/json");
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(
            header(r, "webhook-signature"),
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, &r.body)
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({
                "type": "message.created",
                "timestamp": "2021-02-25T15:02:10.999Z",
                "data": {
                    "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
                    "customer_id": "c-1",
                    "channel": "webhook",
                    "to": "ann@example.com",
                    "subject": "Hi",
                    "body": "Hello",
                    "metadata": {"campaign": "spring"},
                    "attempt": 2
                }
            })
        );
    }

    #[test]
    fn the_spec_vector_signs_a_body_the_way_deliveries_are_signed() {
        // Standard Webhooks' published vector, through the same code path a
        // delivery uses (`Secret::sign` over id, seconds and body).
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn an_http_to_address_overrides_the_configured_url() {
        testing::reset();
        testing::set_config(json!({"url": "https://default.example.com/", "secret": SECRET}));
        let seen = respond(200);
        Webhook::deliver(&message("http://other.example.com/hook")).unwrap();
        assert_eq!(seen.borrow()[0].url, "http://other.example.com/hook");
    }

    #[test]
    fn failures_are_classified() {
        testing::reset();
        testing::set_config(json!({"url": "https://h.example.com/", "secret": SECRET}));
        for (status, retry) in [
            (408, true),
            (429, true),
            (500, true),
            (503, true),
            (400, false),
            (404, false),
            (410, false),
            (301, false),
        ] {
            respond(status);
            let e = Webhook::deliver(&message("x")).unwrap_err();
            assert_eq!(e.retryable, retry, "HTTP {status}: {e}");
        }
        for (error, retry) in [
            (HttpError::Timeout, true),
            (HttpError::Connection("refused".into()), true),
            (
                HttpError::Denied("h.example.com:443 is not in the plugin's allowed hosts".into()),
                false,
            ),
            (HttpError::InvalidRequest("bad".into()), false),
        ] {
            let e = classify(Err(error.clone())).unwrap_err();
            assert_eq!(e.retryable, retry, "{error:?}");
        }
    }

    #[test]
    fn bad_configurations_are_permanent_failures() {
        testing::reset();
        for config in [
            json!({}),
            json!({"secret": "whsec_***"}),
            json!({"secret": SECRET, "url": "ftp://x"}),
            json!({"secret": SECRET, "headers": {"Webhook-Signature": "x"}}),
            json!({"secret": SECRET, "unknown": 1}),
        ] {
            testing::set_config(config.clone());
            let e = Webhook::deliver(&message("https://x.example.com/")).unwrap_err();
            assert!(!e.retryable, "{config}: {e}");
        }
        // No URL anywhere.
        testing::set_config(json!({"secret": SECRET}));
        let e = Webhook::deliver(&message("ann@example.com")).unwrap_err();
        assert!(!e.retryable && e.message.starts_with("no destination"), "{e}");
    }

    #[test]
    fn inbound_events_need_a_valid_signature() {
        testing::reset();
        testing::set_config(json!({"secret": SECRET}));
        let secret = Secret::parse(SECRET).unwrap();
        let body = br#"{"id":"evt_9","type":"replied","customer":"EXT-1","message_id":"m-1","at":1700000000000}"#;
        let now = 1_700_000_100;
        let mut request = InboundRequest {
            method: "POST".into(),
            path: "/v1/channels/webhook/inbound".into(),
            headers: vec![
                ("webhook-id".into(), "msg_in_1".into()),
                ("webhook-timestamp".into(), now.to_string()),
                ("webhook-signature".into(), secret.sign("msg_in_1", now, body)),
            ],
            body: body.to_vec(),
            received_at: now * 1000 + 250,
        };
        let events = Webhook::parse_inbound(&request).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "message_replied");
        assert_eq!(events[0].customer_external_id, "EXT-1");
        assert_eq!(events[0].occurred_at, 1_700_000_000_000);
        assert_eq!(events[0].idempotency_key, "evt_9");
        request.body[10] ^= 1;
        assert!(matches!(
            Webhook::parse_inbound(&request),
            Err(InboundError::Unauthenticated(_))
        ));
        testing::set_config(json!({}));
        assert!(matches!(
            Webhook::parse_inbound(&request),
            Err(InboundError::Unauthenticated(_))
        ));
    }
}
