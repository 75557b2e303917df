//! Checks on what a plugin returns: its size (strings and lists, summed, so
//! a guest cannot hand the host an unbounded result) and its validity (no
//! NaN or infinite scores, JSON fields that parse). Both run before any
//! result leaves the runtime.

use super::contract_v0_1_0::channel::{InboundEvent, Receipt};
use super::contract_v0_1_0::cross_selling::Recommendation;
use super::contract_v0_1_0::rewards::{LedgerIntent, RewardOutcome};
use super::contract_v0_1_0::scoring::CustomerScore;
use super::contract_v0_1_0::types::PluginError;

/// Approximate encoded size: string and byte lengths plus 8 per scalar.
pub(crate) trait OutputSize {
    fn output_size(&self) -> usize;
}

impl OutputSize for () {
    fn output_size(&self) -> usize {
        0
    }
}

impl OutputSize for String {
    fn output_size(&self) -> usize {
        self.len()
    }
}

impl<T: OutputSize> OutputSize for Option<T> {
    fn output_size(&self) -> usize {
        self.as_ref().map_or(0, |v| v.output_size())
    }
}

impl<T: OutputSize> OutputSize for Vec<T> {
    fn output_size(&self) -> usize {
        self.iter().map(|v| v.output_size() + 8).sum()
    }
}

impl<T: OutputSize, E: OutputSize> OutputSize for Result<T, E> {
    fn output_size(&self) -> usize {
        match self {
            Ok(v) => v.output_size(),
            Err(e) => e.output_size(),
        }
    }
}

impl OutputSize for PluginError {
    fn output_size(&self) -> usize {
        match self {
            PluginError::InvalidInput(m)
            | PluginError::InvalidConfig(m)
            | PluginError::Unavailable(m)
            | PluginError::Internal(m) => m.len(),
        }
    }
}

impl OutputSize for CustomerScore {
    fn output_size(&self) -> usize {
        8 + self.label.output_size()
            + self.segment.output_size()
            + self.explanation.len()
            + self.components.iter().map(|(k, _)| k.len() + 16).sum::<usize>()
    }
}

impl OutputSize for Recommendation {
    fn output_size(&self) -> usize {
        self.sku.len() + 8 + self.reason.len()
    }
}

impl OutputSize for RewardOutcome {
    fn output_size(&self) -> usize {
        let ledger: usize = self
            .ledger
            .iter()
            .map(|i| match i {
                LedgerIntent::Earn(e) => 24 + e.reason.len(),
                LedgerIntent::Adjust(a) => 16 + a.reason.len(),
            })
            .sum();
        ledger
            + self
                .tier_change
                .as_ref()
                .map_or(0, |t| t.tier_id.output_size() + t.reason.len())
    }
}

impl OutputSize for Receipt {
    fn output_size(&self) -> usize {
        self.provider_id.output_size() + self.detail.output_size()
    }
}

impl OutputSize for InboundEvent {
    fn output_size(&self) -> usize {
        self.customer_external_id.len() + self.kind.len() + 8 + self.idempotency_key.len() + self.payload.len()
    }
}

pub(crate) fn check_size(value: &impl OutputSize, limit: usize) -> Result<(), super::CallError> {
    let bytes = value.output_size();
    if bytes > limit {
        Err(super::CallError::OutputTooLarge { bytes, limit })
    } else {
        Ok(())
    }
}

pub(crate) fn finite(what: &str, v: f64) -> Result<(), String> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(format!("{what} is {v}, not a finite number"))
    }
}

/// Text the host stores must not contain NUL (PostgreSQL TEXT refuses it).
pub(crate) fn text(what: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        Err(format!("{what} contains a NUL character"))
    } else {
        Ok(())
    }
}

pub(crate) fn validate_score(s: &CustomerScore) -> Result<(), String> {
    finite("score value", s.value)?;
    for (name, v) in &s.components {
        text("component name", name)?;
        // The name goes into the message only on failure: formatting it for
        // every component of every score was a visible part of batch scoring.
        if !v.is_finite() {
            finite(&format!("component `{name}`"), *v)?;
        }
    }
    text("label", s.label.as_deref().unwrap_or_default())?;
    text("segment", s.segment.as_deref().unwrap_or_default())?;
    text("explanation", &s.explanation)
}

pub(crate) fn validate_json(what: &str, json: &str) -> Result<(), String> {
    text(what, json)?;
    serde_json::from_str::<serde::de::IgnoredAny>(json)
        .map(|_| ())
        .map_err(|e| format!("{what} is not valid JSON: {e}"))
}
