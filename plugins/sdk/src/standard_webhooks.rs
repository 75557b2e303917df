//! Standard Webhooks (<https://www.standardwebhooks.com>) signing and
//! verification, and the signed JSON event format first-party connectors
//! accept on their inbound endpoint. Shared by `plugins/webhook` (which
//! signs what it sends and verifies what it receives) and `plugins/email`
//! (whose provider events arrive in the same format), so that both agree
//! byte for byte with the spec's reference libraries.
//!
//! # Signature scheme
//! - secret: `whsec_<base64 of the key bytes>` (the prefix is optional);
//! - signed content: `"{webhook-id}.{webhook-timestamp}.{body}"`;
//! - `webhook-signature`: space-separated `v1,<base64(HMAC-SHA256(key, signed content))>`
//!   entries (several while a secret is being rotated); any one matching
//!   is enough. Other version tags (`v1a,...`) are ignored;
//! - `webhook-timestamp`: integer seconds since the epoch, refused when more
//!   than [`TOLERANCE_SECONDS`] away from the receiving host's clock.
//!
//! Comparison is constant-time (`hmac`'s `verify_slice`), so a forger
//! learns nothing from how long a wrong signature takes to be refused.
//!
//! # Inbound events
//! The body is one JSON object or an array of them:
//! `{"id": "evt_1", "type": "opened", "customer": "EXT-1", "message_id": "m-1",
//! "at": 1700000000000 | "2023-11-14T22:13:20Z", "data": {...}}`.
//! `type` is one of [`EVENT_TYPES`]; `customer` is the customer's external
//! id; `at` (ms since the epoch, or RFC 3339) defaults to the time the host
//! received the request; `id` defaults to `{webhook-id}` (`{webhook-id}#{index}`
//! in an array); `message_id` and `data` are optional. Each becomes an
//! [`InboundEvent`] of kind `message_{type}` (the host's built-in
//! interaction kinds `message_delivered`, `message_opened`, ...), with the
//! event id as its idempotency key (the host scopes keys per connector) and
//! the event object as its payload. The type [`SATISFACTION`] is a
//! customer's survey answer (`"survey": "csat" | "nps", "score": n` in the
//! event) and becomes the host's `satisfaction` kind, which checks it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::types::{InboundError, InboundEvent, InboundRequest, Timestamp};

/// How far `webhook-timestamp` may be from the receiver's clock (the spec's
/// recommended five minutes): older requests may be replays.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The event types of the inbound format, in the order documented.
pub const EVENT_TYPES: [&str; 6] = ["delivered", "opened", "clicked", "replied", "unsubscribed", "bounced"];

/// Inbound kinds are `message_{type}`: the host's built-in interaction kinds.
pub const KIND_PREFIX: &str = "message_";

/// The event type of a satisfaction answer (CSAT or NPS), stored as the
/// host's built-in `satisfaction` kind as it is.
pub const SATISFACTION: &str = "satisfaction";

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The most events one request may carry.
pub const MAX_EVENTS: usize = 1000;

type HmacSha256 = Hmac<Sha256>;

/// A signing key, decoded from its `whsec_...` text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (it would end up in logs).
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>` (or the bare base64). The key must be 1 to
    /// 64 bytes, per the spec (24 to 64 recommended).
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
        let key = BASE64
            .decode(encoded)
            .map_err(|e| format!("the secret is not `whsec_` followed by base64: {e}"))?;
        if key.is_empty() || key.len() > 64 {
            return Err(format!("the secret's key is {} bytes; expected 1 to 64", key.len()));
        }
        Ok(Secret(key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for one message: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            BASE64.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    /// Checks the three Standard Webhooks headers of a request against
    /// `body`, with `now` in seconds. Returns the `webhook-id`.
    pub fn verify<'a>(&self, request: &'a InboundRequest, now: i64) -> Result<&'a str, InboundError> {
        let missing = |h: &str| InboundError::Unauthenticated(format!("missing {h} header"));
        let id = request.header(ID_HEADER).ok_or_else(|| missing(ID_HEADER))?;
        let timestamp = request
            .header(TIMESTAMP_HEADER)
            .ok_or_else(|| missing(TIMESTAMP_HEADER))?;
        let signatures = request
            .header(SIGNATURE_HEADER)
            .ok_or_else(|| missing(SIGNATURE_HEADER))?;
        let timestamp: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| InboundError::Unauthenticated(format!("{TIMESTAMP_HEADER} is not an integer")))?;
        if (now - timestamp).abs() > TOLERANCE_SECONDS {
            return Err(InboundError::Unauthenticated(format!(
                "{TIMESTAMP_HEADER} {timestamp} is more than {TOLERANCE_SECONDS} s from the receiver's clock ({now})"
            )));
        }
        let mac = self.mac(id, timestamp, &request.body);
        let matched = signatures.split(' ').any(|entry| {
            let Some(encoded) = entry.strip_prefix("v1,") else {
                return false;
            };
            match BASE64.decode(encoded) {
                Ok(sig) => mac.clone().verify_slice(&sig).is_ok(),
                Err(_) => false,
            }
        });
        if matched {
            Ok(id)
        } else {
            Err(InboundError::Unauthenticated(format!(
                "no {SIGNATURE_HEADER} entry matches the body"
            )))
        }
    }
}

/// Verifies a signed request and turns its JSON events into
/// [`InboundEvent`]s of kind `message_{type}` (see the module doc).
pub fn parse_inbound(secret: &Secret, request: &InboundRequest) -> Result<Vec<InboundEvent>, InboundError> {
    // Authenticate before reading the body: an unsigned sender learns
    // nothing about the format.
    let webhook_id = secret.verify(request, request.received_at.div_euclid(1000))?;
    let value: Value =
        serde_json::from_slice(&request.body).map_err(|e| InboundError::Malformed(format!("body is not JSON: {e}")))?;
    let (events, many) = match value {
        Value::Array(items) => (items, true),
        object @ Value::Object(_) => (vec![object], false),
        _ => {
            return Err(InboundError::Malformed(
                "body must be an event object or an array of them".into(),
            ));
        }
    };
    if events.len() > MAX_EVENTS {
        return Err(InboundError::Malformed(format!(
            "{} events in one request; at most {MAX_EVENTS}",
            events.len()
        )));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let default_id = if many {
                format!("{webhook_id}#{i}")
            } else {
                webhook_id.to_owned()
            };
            event_from_json(event, &default_id, request.received_at)
                .map_err(|m| InboundError::Malformed(if many { format!("event {i}: {m}") } else { m }))
        })
        .collect()
}

fn event_from_json(event: Value, default_id: &str, received_at: Timestamp) -> Result<InboundEvent, String> {
    let object = event.as_object().ok_or("an event must be a JSON object")?;
    let text = |field: &str| -> Result<Option<&str>, String> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.as_str())),
            Some(_) => Err(format!("`{field}` must be a non-empty string")),
        }
    };
    let kind = text("type")?.ok_or("`type` is required")?;
    if !EVENT_TYPES.contains(&kind) && kind != SATISFACTION {
        return Err(format!(
            "unknown `type` {kind:?}; expected one of {}, {SATISFACTION}",
            EVENT_TYPES.join(", ")
        ));
    }
    let customer = text("customer")?.ok_or("`customer` (the customer's external id) is required")?;
    let id = text("id")?.unwrap_or(default_id);
    text("message_id")?;
    let occurred_at = match object.get("at") {
        None | Some(Value::Null) => received_at,
        Some(Value::Number(n)) => n.as_i64().ok_or("`at` must be an integer of milliseconds")?,
        Some(Value::String(s)) => parse_rfc3339_ms(s)?,
        Some(_) => return Err("`at` must be milliseconds since the epoch or an RFC 3339 string".into()),
    };
    if object.get("data").is_some_and(|d| !d.is_object() && !d.is_null()) {
        return Err("`data` must be a JSON object".into());
    }
    Ok(InboundEvent {
        customer_external_id: customer.to_owned(),
        kind: if kind == SATISFACTION {
            SATISFACTION.to_owned()
        } else {
            format!("{KIND_PREFIX}{kind}")
        },
        occurred_at,
        idempotency_key: id.to_owned(),
        payload: event,
    })
}

/// RFC 3339 text (`2023-11-14T22:13:20Z`, `...+02:00`, fractional seconds)
/// as milliseconds since the epoch.
pub fn parse_rfc3339_ms(text: &str) -> Result<Timestamp, String> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`at` {text:?} is not RFC 3339: {e}"))?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| format!("`at` {text:?} is out of range"))
}

/// Milliseconds since the epoch as RFC 3339 UTC with millisecond precision
/// (`2023-11-14T22:13:20.123Z`), for payload timestamps.
pub fn format_rfc3339_ms(ms: Timestamp) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(at) => {
            let (y, mo, d) = (at.year(), u8::from(at.month()), at.day());
            let (h, mi, s, milli) = (at.hour(), at.minute(), at.second(), at.millisecond());
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
        }
        // Out of the calendar's range: keep the number rather than fail.
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published vector of the Standard Webhooks reference libraries
    // (e.g. python/tests/test_webhooks.py `test_sign_function`).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn request(signature: &str, timestamp: i64, body: &str, received_at_s: i64) -> InboundRequest {
        InboundRequest {
            method: "POST".into(),
            path: "/v1/channels/webhook/inbound".into(),
            headers: vec![
                ("Webhook-Id".into(), SPEC_ID.into()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                ("webhook-signature".into(), signature.into()),
            ],
            body: body.as_bytes().to_vec(),
            received_at: received_at_s * 1000,
        }
    }

    #[test]
    fn signs_the_spec_test_vector() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
        // The prefix is optional.
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(), secret);
    }

    #[test]
    fn verifies_the_spec_vector_within_the_tolerance_only() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let ok = request(SPEC_SIGNATURE, SPEC_TIMESTAMP, SPEC_BODY, SPEC_TIMESTAMP + 10);
        assert_eq!(secret.verify(&ok, SPEC_TIMESTAMP + 10), Ok(SPEC_ID));
        assert!(secret.verify(&ok, SPEC_TIMESTAMP + TOLERANCE_SECONDS).is_ok());
        assert!(secret.verify(&ok, SPEC_TIMESTAMP - TOLERANCE_SECONDS).is_ok());
        for now in [
            SPEC_TIMESTAMP + TOLERANCE_SECONDS + 1,
            SPEC_TIMESTAMP - TOLERANCE_SECONDS - 1,
        ] {
            assert!(
                matches!(secret.verify(&ok, now), Err(InboundError::Unauthenticated(m)) if m.contains("from the receiver's clock"))
            );
        }
        // Tampered body, wrong secret, wrong id: refused.
        let tampered = request(SPEC_SIGNATURE, SPEC_TIMESTAMP, r#"{"test": 2432232315}"#, 0);
        assert!(secret.verify(&tampered, SPEC_TIMESTAMP).is_err());
        let other = Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(other.verify(&ok, SPEC_TIMESTAMP).is_err());
        let mut wrong_id = ok.clone();
        wrong_id.headers[0].1 = "msg_other".into();
        assert!(secret.verify(&wrong_id, SPEC_TIMESTAMP).is_err());
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let several = format!("v1,Zm9vYmFy v1a,xyz {SPEC_SIGNATURE} garbage");
        assert!(
            secret
                .verify(&request(&several, SPEC_TIMESTAMP, SPEC_BODY, 0), SPEC_TIMESTAMP)
                .is_ok()
        );
        let none = "v1,Zm9vYmFy v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(
            secret
                .verify(&request(none, SPEC_TIMESTAMP, SPEC_BODY, 0), SPEC_TIMESTAMP)
                .is_err()
        );
    }

    #[test]
    fn missing_headers_and_bad_secrets_are_refused() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let mut r = request(SPEC_SIGNATURE, SPEC_TIMESTAMP, SPEC_BODY, 0);
        r.headers.retain(|(n, _)| n != "webhook-signature");
        assert_eq!(
            secret.verify(&r, SPEC_TIMESTAMP),
            Err(InboundError::Unauthenticated("missing webhook-signature header".into()))
        );
        assert!(Secret::parse("whsec_not base64!").is_err());
        assert!(Secret::parse("whsec_").is_err());
    }

    #[test]
    fn parses_single_and_batched_events() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let now = 1_700_000_000;
        let body =
            r#"{"id":"evt_1","type":"opened","customer":"EXT-1","message_id":"m-1","at":"2023-11-14T22:13:20.5Z"}"#;
        let sig = secret.sign(SPEC_ID, now, body.as_bytes());
        let events = parse_inbound(&secret, &request(&sig, now, body, now)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "message_opened");
        assert_eq!(events[0].customer_external_id, "EXT-1");
        assert_eq!(events[0].occurred_at, 1_700_000_000_500);
        assert_eq!(events[0].idempotency_key, "evt_1");
        assert_eq!(events[0].payload["message_id"], "m-1");

        let body = r#"[{"type":"delivered","customer":"EXT-1","at":1700000000000},{"type":"clicked","customer":"EXT-2","data":{"url":"https://x"}}]"#;
        let sig = secret.sign(SPEC_ID, now, body.as_bytes());
        let events = parse_inbound(&secret, &request(&sig, now, body, now)).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, "message_delivered");
        assert_eq!(events[0].occurred_at, 1_700_000_000_000);
        assert_eq!(events[0].idempotency_key, format!("{SPEC_ID}#0"));
        assert_eq!(events[1].kind, "message_clicked");
        assert_eq!(events[1].occurred_at, now * 1000, "defaults to the receipt time");
        assert_eq!(events[1].idempotency_key, format!("{SPEC_ID}#1"));
    }

    #[test]
    fn malformed_events_are_refused_after_authentication() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let now = 1_700_000_000;
        for (body, needle) in [
            ("nope", "not JSON"),
            ("42", "event object or an array"),
            (r#"{"type":"exploded","customer":"E"}"#, "unknown `type`"),
            (r#"{"type":"opened"}"#, "`customer`"),
            (r#"{"type":"opened","customer":"E","at":"yesterday"}"#, "RFC 3339"),
            (
                r#"[{"type":"opened","customer":"E"}, 3]"#,
                "event 1: an event must be a JSON object",
            ),
        ] {
            let sig = secret.sign(SPEC_ID, now, body.as_bytes());
            match parse_inbound(&secret, &request(&sig, now, body, now)) {
                Err(InboundError::Malformed(m)) => assert!(m.contains(needle), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        // Unsigned garbage is unauthenticated, not malformed.
        let r = request("v1,Zm9vYmFy", now, "nope", now);
        assert!(matches!(
            parse_inbound(&secret, &r),
            Err(InboundError::Unauthenticated(_))
        ));
    }

    #[test]
    fn satisfaction_answers_keep_their_kind() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let now = 1_700_000_000;
        let body = r#"{"type":"satisfaction","customer":"E","survey":"nps","score":9}"#;
        let sig = secret.sign(SPEC_ID, now, body.as_bytes());
        let events = parse_inbound(&secret, &request(&sig, now, body, now)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "satisfaction");
        assert_eq!(events[0].payload["score"], 9);
    }

    #[test]
    fn formats_timestamps_as_rfc3339() {
        assert_eq!(format_rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339_ms("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse_rfc3339_ms("2023-11-15T00:13:20+02:00"), Ok(1_700_000_000_000));
    }
}
