//! Inbound channel events: a channel provider (an e-mail service, an SMS
//! gateway, a chat platform) calls the tenant's connector endpoint, the
//! connector plugin verifies the sender's signature and turns the request
//! into events, and the host ingests each event as an interaction.
//!
//! Why the plugin parses and the host ingests: signature schemes and payload
//! shapes are per provider (the connector's business), while idempotent,
//! tenant-scoped storage is the host's. The plugin never names the tenant:
//! it comes from the caller's key or the URL, and only the tenant's own
//! enabled connector is run.
//!
//! Exactly once. Each event carries the provider's idempotency key; it is
//! stored as `inbound:<connector>:<key>`, so a provider retrying a request
//! (they all do, on any non-2xx) replays instead of duplicating, and two
//! connectors cannot collide. All events of one request are ingested in one
//! transaction, a savepoint each, through the same path as
//! `POST /v1/interactions/batch` (reward schemes included).
//!
//! Unsubscribes. A `message_unsubscribed` event also records a suppression
//! for every channel the connector serves, so the outbox refuses further
//! messages to that customer there until an admin lifts it.
//!
//! Failures. `inbound-error::unauthenticated` and `malformed` are the
//! connector's typed answers: they do not count towards its suspension (an
//! attacker sending bad signatures must not be able to switch a tenant's
//! connector off). A trap, timeout or garbage output does count, like any
//! other plugin call.

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::rewards::RewardRun;
use super::{PluginFailure, PluginRun, PluginService};
use crate::manifest::PluginKind;
use crate::runtime::PluginErrorKind;
use crate::runtime::contract::channel::{InboundEvent, InboundRequest};
use crate::store::interactions::{HookedIngest, MAX_IDEMPOTENCY_KEY_CHARS, NewInteraction};
use crate::store::{StoreError, TenantId, now_ms};

/// The interaction kind that suppresses further messages (see
/// `store::suppressions`).
pub const UNSUBSCRIBED: &str = "message_unsubscribed";

/// The raw HTTP request, as the API hands it over (credentials removed).
#[derive(Debug, Clone)]
pub struct RawInbound {
    pub method: String,
    /// Path and query, e.g. `/v1/channels/webhook/inbound?tenant=acme`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why an inbound request was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum InboundFailure {
    /// No such connector for this tenant, or not active.
    #[error("connector `{0}` is not enabled for this tenant")]
    NoConnector(String),
    /// The connector did not accept the sender's signature.
    #[error("{0}")]
    Unauthenticated(String),
    /// The connector does not understand the request.
    #[error("{0}")]
    Malformed(String),
    /// The connector failed (trap, timeout, bad output, not loadable).
    #[error("connector failed: {}", .0.message)]
    Connector(PluginFailure),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One event and what became of it.
pub struct IngestedEvent {
    pub event: InboundEvent,
    pub result: Result<HookedIngest<Vec<RewardRun>>, StoreError>,
}

/// Providers' keys can be long (some are whole URLs); the stored key must
/// fit the ingest limit, so long ones are replaced by their digest, which is
/// just as unique.
fn stored_key(connector: &str, key: &str) -> String {
    let key = format!("inbound:{connector}:{key}");
    if key.chars().count() <= MAX_IDEMPOTENCY_KEY_CHARS {
        key
    } else {
        format!(
            "inbound:{connector}:sha256:{}",
            hex::encode(Sha256::digest(key.as_bytes()))
        )
    }
}

/// The interaction an event becomes. The payload is kept as the connector
/// gave it (an object); anything else is wrapped so it is not lost.
fn interaction(connector: &str, event: &InboundEvent) -> NewInteraction {
    let payload = match serde_json::from_str::<Value>(&event.payload) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(other) => serde_json::json!({ "value": other }),
        Err(_) => serde_json::json!({ "raw": event.payload }),
    };
    NewInteraction {
        customer_id: None,
        customer_external_id: Some(event.customer_external_id.clone()),
        kind: event.kind.clone(),
        channel: Some(connector.to_owned()),
        occurred_at: i128::from(event.occurred_at)
            .checked_mul(1_000_000)
            .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok()),
        amount: None,
        currency: None,
        items: Vec::new(),
        payload,
        idempotency_key: Some(stored_key(connector, &event.idempotency_key)),
    }
}

impl PluginService {
    /// Runs `connector`'s `parse-inbound` for `tenant` on `request` and
    /// ingests the events it returns.
    pub async fn receive_inbound(
        &self,
        tenant: &TenantId,
        connector: &str,
        request: RawInbound,
    ) -> Result<(PluginRun<()>, Vec<IngestedEvent>), InboundFailure> {
        let plugin = self
            .find(tenant, connector)
            .await?
            .filter(|p| p.kind == PluginKind::ChannelConnector && p.runs())
            .ok_or_else(|| InboundFailure::NoConnector(connector.to_owned()))?;
        let request = InboundRequest {
            method: request.method,
            path: request.path,
            headers: request.headers,
            body: request.body,
            received_at: now_ms(),
        };
        let run = self
            .run(
                tenant,
                &plugin,
                |p, ctx| async move { p.parse_inbound(ctx, &request).await },
            )
            .await;
        let events = match run.result {
            Ok(events) => events,
            Err(fail) => {
                return Err(match fail.code.strip_prefix("plugin_") {
                    Some(code) if code == PluginErrorKind::Unauthenticated.to_string() => {
                        InboundFailure::Unauthenticated(fail.message)
                    }
                    Some(code) if code == PluginErrorKind::Malformed.to_string() => {
                        InboundFailure::Malformed(fail.message)
                    }
                    _ => InboundFailure::Connector(fail),
                });
            }
        };
        let report = PluginRun {
            plugin: run.plugin,
            version: run.version,
            result: Ok(()),
            report: run.report,
        };
        if events.is_empty() {
            return Ok((report, Vec::new()));
        }
        let items = events.iter().map(|e| interaction(connector, e)).collect();
        let results = self.ingest_batch_with_rewards(tenant, items).await?;
        let ingested: Vec<IngestedEvent> = events
            .into_iter()
            .zip(results)
            .map(|(event, result)| IngestedEvent { event, result })
            .collect();
        self.suppress_unsubscribed(tenant, connector, &ingested).await?;
        Ok((report, ingested))
    }

    /// An unsubscribe stops further messages on every channel the connector
    /// serves. Done after the events are stored, and again on a replay, so a
    /// failure here (answered 5xx) is repaired by the provider's retry.
    async fn suppress_unsubscribed(
        &self,
        tenant: &TenantId,
        connector: &str,
        ingested: &[IngestedEvent],
    ) -> Result<(), InboundFailure> {
        let channels = self
            .manifest
            .current()
            .plugin(connector)
            .map(|spec| spec.channels.clone())
            .unwrap_or_default();
        for e in ingested.iter().filter(|e| e.event.kind == UNSUBSCRIBED) {
            let Ok((interaction, _, _)) = &e.result else {
                continue;
            };
            for channel in &channels {
                self.store
                    .suppress(
                        tenant,
                        &interaction.customer_id,
                        channel,
                        &format!("inbound:{connector}"),
                        &format!("unsubscribed (provider event {})", e.event.idempotency_key),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// How many events of `events` were stored or replayed (for logs/metrics).
pub fn accepted(events: &[IngestedEvent]) -> usize {
    events.iter().filter(|e| e.result.is_ok()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_provider_keys_are_digested_to_fit() {
        let short = stored_key("webhook", "evt_1");
        assert_eq!(short, "inbound:webhook:evt_1");
        let long = stored_key("webhook", &"x".repeat(400));
        assert!(long.chars().count() <= MAX_IDEMPOTENCY_KEY_CHARS);
        assert!(long.starts_with("inbound:webhook:sha256:"));
        assert_ne!(long, stored_key("webhook", &"x".repeat(401)));
    }

    #[test]
    fn event_becomes_an_idempotent_interaction_of_the_connector_channel() {
        let event = InboundEvent {
            customer_external_id: "c-9".into(),
            kind: "email_open".into(),
            occurred_at: 1_700_000_000_123,
            idempotency_key: "evt-1".into(),
            payload: "[1,2]".into(),
        };
        let new = interaction("email", &event);
        assert_eq!(new.customer_external_id.as_deref(), Some("c-9"));
        assert_eq!(new.channel.as_deref(), Some("email"));
        assert_eq!(new.idempotency_key.as_deref(), Some("inbound:email:evt-1"));
        assert_eq!(new.payload, serde_json::json!({ "value": [1, 2] }));
        let at = new.occurred_at.expect("valid time");
        assert_eq!(at.unix_timestamp_nanos(), 1_700_000_000_123_000_000);
    }
}
