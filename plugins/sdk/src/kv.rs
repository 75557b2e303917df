//! Capability `kv`: the plugin's private key-value store for the calling
//! tenant (size-capped by the manifest's `kv_max_bytes`). The only state
//! that survives between calls, e.g. a model written by `fit` and read by
//! `score`.
//!
//! On wasm32 these call the host; natively they use the in-memory store of
//! [`crate::testing`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{HostError, PluginError};

#[cfg(target_arch = "wasm32")]
use crate::bindings::scoring_rule::rapport::crm::kv as backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::kv as backend;

/// The bytes under `key`, `None` when absent.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
    backend::get(key).map_err(Into::into)
}

/// Stores `value` under `key`; `quota-exceeded` past the plugin's limit.
pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
    backend::set(key, value).map_err(Into::into)
}

/// Removes `key` (absent keys are fine).
pub fn delete(key: &str) -> Result<(), HostError> {
    backend::delete(key).map_err(Into::into)
}

/// Keys starting with `prefix`, in order, at most 1000.
pub fn list_keys(prefix: &str) -> Result<Vec<String>, HostError> {
    backend::list_keys(prefix).map_err(Into::into)
}

/// The UTF-8 text under `key`. Bytes that are not UTF-8 are the plugin's
/// own bug (it wrote them): `internal`.
pub fn get_string(key: &str) -> Result<Option<String>, PluginError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PluginError::Internal(format!("kv value under {key:?} is not UTF-8"))),
    }
}

/// The JSON value under `key`, decoded as `T`; `None` when absent. A value
/// that does not decode is `internal` (the plugin wrote something else).
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, PluginError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
            PluginError::Internal(format!("kv value under {key:?} does not decode: {err}"))
        }),
    }
}

/// Stores `value` as compact JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|err| PluginError::Internal(format!("cannot encode kv value {key:?}: {err}")))?;
    set(key, &bytes).map_err(Into::into)
}
