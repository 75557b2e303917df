//! `{{name}}`: a Rapport channel-connector plugin (a JSON webhook).
//!
//! `deliver`: POSTs the message as JSON to `message.to` (which must be one
//! of the manifest's `allowed_hosts`), with `idempotency-key: {id}`; 2xx is
//! delivered, 429/5xx/timeouts are retryable, anything else is not.
//! `parse-inbound`: a JSON body `{"customer", "kind", "at", "id"}` becomes
//! one event; when the tenant's config sets `"inbound_token"`, the request
//! must carry it in header `x-token`. Replace [`parse_event`] and
//! [`delivery_outcome`] with your channel's rules: they are plain Rust,
//! tested natively by `cargo test`.
//!
//! Capabilities imported: `outbound-http`, `config`.

use rapport_plugin_sdk::{
    self as sdk, ChannelConnector, DeliveryError, HttpError, HttpRequest, HttpResponse, InboundError, InboundEvent,
    InboundRequest, Message, Receipt,
};
use serde::Deserialize;

/// The tenant's settings for this plugin (its config JSON object).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// When set, inbound requests must carry it in header `x-token`.
    pub inbound_token: Option<String>,
}

/// The business logic of `parse-inbound`.
pub fn parse_event(request: &InboundRequest, settings: &Settings) -> Result<InboundEvent, InboundError> {
    if let Some(token) = &settings.inbound_token {
        if request.header("x-token") != Some(token.as_str()) {
            return Err(InboundError::Unauthenticated("missing or wrong x-token".into()));
        }
    }
    let body: serde_json::Value = serde_json::from_slice(&request.body)
        .map_err(|e| InboundError::Malformed(format!("body is not JSON: {e}")))?;
    let text = |field: &str| {
        body.get(field)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| InboundError::Malformed(format!("missing string field \"{field}\"")))
    };
    let at = body
        .get("at")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| InboundError::Malformed("missing integer field \"at\"".into()))?;
    Ok(InboundEvent {
        customer_external_id: text("customer")?,
        kind: text("kind")?,
        occurred_at: at,
        idempotency_key: text("id")?,
        payload: body.clone(),
    })
}

/// The business logic of `deliver`: what an HTTP outcome means.
pub fn delivery_outcome(outcome: Result<HttpResponse, HttpError>) -> Result<Receipt, DeliveryError> {
    let fail = |retryable, message: String| Err(DeliveryError { retryable, message });
    match outcome {
        Ok(r) if (200..300).contains(&r.status) => Ok(Receipt {
            provider_id: r.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("x-request-id")).map(|(_, v)| v.clone()),
            detail: Some(format!("HTTP {}", r.status)),
        }),
        Ok(r) => fail(r.status == 429 || r.status >= 500, format!("HTTP {}", r.status)),
        Err(HttpError::Timeout) => fail(true, "timeout".into()),
        Err(HttpError::Connection(m)) => fail(true, format!("connection: {m}")),
        Err(HttpError::Denied(m)) => fail(false, m),
        Err(other) => fail(false, other.to_string()),
    }
}

pub struct Plugin;

sdk::export_channel_connector!(Plugin);

impl ChannelConnector for Plugin {
    fn deliver(message: &Message) -> Result<Receipt, DeliveryError> {
        let body = serde_json::json!({
            "id": message.id,
            "customer_id": message.customer_id,
            "subject": message.subject,
            "body": message.body,
            "attempt": message.attempt,
        });
        let request = HttpRequest {
            method: "POST".into(),
            url: message.to.clone(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("idempotency-key".into(), message.id.clone()),
            ],
            body: body.to_string().into_bytes(),
            timeout_ms: None,
        };
        delivery_outcome(sdk::host::http::send(&request))
    }

    fn parse_inbound(request: &InboundRequest) -> Result<Vec<InboundEvent>, InboundError> {
        // An unusable config cannot authenticate anything: refuse.
        let settings: Settings =
            sdk::config().map_err(|e| InboundError::Unauthenticated(format!("connector misconfigured: {e}")))?;
        Ok(vec![parse_event(request, &settings)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], body: &str) -> InboundRequest {
        InboundRequest {
            method: "POST".into(),
            path: "/".into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.as_bytes().to_vec(),
            received_at: 0,
        }
    }

    #[test]
    fn parses_an_event_and_checks_the_token() {
        let settings = Settings { inbound_token: Some("s3cret".into()) };
        let body = r#"{"customer":"E1","kind":"email_open","at":1750000000000,"id":"evt-1"}"#;
        let event = parse_event(&request(&[("X-Token", "s3cret")], body), &settings).unwrap();
        assert_eq!(
            (event.customer_external_id.as_str(), event.kind.as_str(), event.occurred_at, event.idempotency_key.as_str()),
            ("E1", "email_open", 1_750_000_000_000, "evt-1")
        );
        assert!(matches!(parse_event(&request(&[], body), &settings), Err(InboundError::Unauthenticated(_))));
        assert!(matches!(parse_event(&request(&[], "{}"), &Settings::default()), Err(InboundError::Malformed(_))));
    }

    #[test]
    fn maps_http_outcomes() {
        let response = |status| Ok(HttpResponse { status, headers: vec![], body: vec![] });
        assert_eq!(delivery_outcome(response(202)).unwrap().detail.as_deref(), Some("HTTP 202"));
        assert!(delivery_outcome(response(503)).unwrap_err().retryable);
        assert!(!delivery_outcome(response(404)).unwrap_err().retryable);
        assert!(delivery_outcome(Err(HttpError::Timeout)).unwrap_err().retryable);
    }
}
