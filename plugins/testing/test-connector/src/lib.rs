//! `test-connector`: the well-behaved channel-connector plugin the runtime
//! tests load. Deterministic on purpose, because the tests assert exact
//! values.
//!
//! `deliver(message)`: POSTs the message as a JSON object
//! `{"attempt","body","channel","customer_id","id","metadata","subject","to"}`
//! (compact, keys in this alphabetical order; `metadata` embedded as JSON
//! when it parses, else as a string) to the URL in `message.to` through
//! `outbound-http`, with headers `content-type: application/json` and
//! `idempotency-key: {message.id}`, and no per-request timeout (the host's
//! limit applies). Outcome:
//!
//! | host answer                    | result                                                   |
//! |--------------------------------|----------------------------------------------------------|
//! | 2xx                            | `receipt { provider-id: header x-provider-id (any case), detail: "HTTP {status}" }` |
//! | 429 or 5xx                     | `delivery-error { retryable: true,  message: "HTTP {status}" }` |
//! | other 4xx                      | `delivery-error { retryable: false, message: "HTTP {status}" }` |
//! | 1xx / 3xx                      | `delivery-error { retryable: false, message: "unexpected HTTP {status}" }` |
//! | `http-error::timeout`          | retryable, `"timeout"`                                   |
//! | `http-error::connection(m)`    | retryable, `"connection failed: {m}"`                    |
//! | `http-error::denied(m)`        | not retryable, message exactly `m` (the host's words)    |
//! | `http-error::invalid-request(m)` | not retryable, `"invalid request: {m}"`                |
//! | `http-error::response-too-large` | not retryable, `"response too large"`                 |
//!
//! `parse-inbound(request)`: the header `x-test-signature` (any case) must
//! equal lowercase-or-uppercase `hex(sha256(body))`, else
//! `inbound-error::unauthenticated` (checked before the body is parsed). The
//! body must be a JSON object `{"customer": str, "event": str, "at": int ms,
//! "id": str}` (strings non-empty; extra fields allowed), else
//! `inbound-error::malformed`. It yields ONE event: customer-external-id =
//! customer, kind = event, occurred-at = at, idempotency-key = id, payload =
//! the request body verbatim.
//!
//! Capability imported: `outbound-http`.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "channel-connector",
});

use exports::rapport::crm::channel::{
    DeliveryError, Guest, InboundError, InboundEvent, InboundRequest, Message, Receipt,
};
use rapport::crm::outbound_http::{HttpError, Request, send};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SIGNATURE_HEADER: &str = "x-test-signature";
const PROVIDER_ID_HEADER: &str = "x-provider-id";

struct TestConnector;

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn delivery_error(retryable: bool, message: String) -> DeliveryError {
    DeliveryError { retryable, message }
}

fn required_string(object: &serde_json::Map<String, Value>, field: &str) -> Result<String, InboundError> {
    match object.get(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        _ => Err(InboundError::Malformed(format!(
            "field \"{field}\" must be a non-empty string"
        ))),
    }
}

impl Guest for TestConnector {
    fn deliver(message: Message) -> Result<Receipt, DeliveryError> {
        let metadata = serde_json::from_str::<Value>(&message.metadata)
            .unwrap_or_else(|_| Value::String(message.metadata.clone()));
        let body = json!({
            "id": message.id,
            "customer_id": message.customer_id,
            "channel": message.channel,
            "to": message.to,
            "subject": message.subject,
            "body": message.body,
            "metadata": metadata,
            "attempt": message.attempt,
        });
        let request = Request {
            method: "POST".to_string(),
            url: message.to.clone(),
            headers: vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("idempotency-key".to_string(), message.id.clone()),
            ],
            body: body.to_string().into_bytes(),
            timeout_ms: None,
        };
        match send(&request) {
            Ok(response) => match response.status {
                200..=299 => Ok(Receipt {
                    provider_id: header(&response.headers, PROVIDER_ID_HEADER).map(str::to_string),
                    detail: Some(format!("HTTP {}", response.status)),
                }),
                429 | 500..=599 => Err(delivery_error(true, format!("HTTP {}", response.status))),
                400..=499 => Err(delivery_error(false, format!("HTTP {}", response.status))),
                status => Err(delivery_error(false, format!("unexpected HTTP {status}"))),
            },
            Err(HttpError::Timeout) => Err(delivery_error(true, "timeout".to_string())),
            Err(HttpError::Connection(detail)) => Err(delivery_error(true, format!("connection failed: {detail}"))),
            Err(HttpError::Denied(detail)) => Err(delivery_error(false, detail)),
            Err(HttpError::InvalidRequest(detail)) => Err(delivery_error(false, format!("invalid request: {detail}"))),
            Err(HttpError::ResponseTooLarge) => Err(delivery_error(false, "response too large".to_string())),
        }
    }

    fn parse_inbound(request: InboundRequest) -> Result<Vec<InboundEvent>, InboundError> {
        // Authenticate before looking at the body: an unsigned request learns
        // nothing about what this connector would accept.
        let signature = header(&request.headers, SIGNATURE_HEADER)
            .ok_or_else(|| InboundError::Unauthenticated(format!("missing {SIGNATURE_HEADER} header")))?;
        let expected = hex::encode(Sha256::digest(&request.body));
        if !signature.trim().eq_ignore_ascii_case(&expected) {
            return Err(InboundError::Unauthenticated(format!(
                "{SIGNATURE_HEADER} does not match the body"
            )));
        }

        let value: Value = serde_json::from_slice(&request.body)
            .map_err(|err| InboundError::Malformed(format!("body is not JSON: {err}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| InboundError::Malformed("body is not a JSON object".to_string()))?;
        let customer = required_string(object, "customer")?;
        let event = required_string(object, "event")?;
        let id = required_string(object, "id")?;
        let at = object
            .get("at")
            .and_then(Value::as_i64)
            .ok_or_else(|| InboundError::Malformed("field \"at\" must be an integer (ms)".to_string()))?;
        // from_slice succeeded, so the body is valid UTF-8.
        let payload = String::from_utf8_lossy(&request.body).into_owned();
        Ok(vec![InboundEvent {
            customer_external_id: customer,
            kind: event,
            occurred_at: at,
            idempotency_key: id,
            payload,
        }])
    }
}

export!(TestConnector);
