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
// Natively the backend already speaks `HostError`; on wasm32 this
// converts the generated type.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
    backend::get(key).map_err(Into::into)
}

/// Stores `value` under `key`; `quota-exceeded` past the plugin's limit.
// Natively the backend already speaks `HostError`; on wasm32 this
// converts the generated type.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
    backend::set(key, value).map_err(Into::into)
}

/// Removes `key` (absent keys are fine).
// Natively the backend already speaks `HostError`; on wasm32 this
// converts the generated type.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
pub fn delete(key: &str) -> Result<(), HostError> {
    backend::delete(key).map_err(Into::into)
}

/// Keys starting with `prefix`, in order, at most 1000.
// Natively the backend already speaks `HostError`; on wasm32 this
// converts the generated type.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
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
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| PluginError::Internal(format!("kv value under {key:?} does not decode: {err}"))),
    }
}

/// Stores `value` as compact JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|err| PluginError::Internal(format!("cannot encode kv value {key:?}: {err}")))?;
    set(key, &bytes).map_err(Into::into)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn json_round_trips_and_bad_values_are_internal() {
        testing::reset();
        assert_eq!(get_json::<Vec<u32>>("m"), Ok(None));
        set_json("m", &vec![1u32, 2, 3]).unwrap();
        assert_eq!(get_json::<Vec<u32>>("m"), Ok(Some(vec![1, 2, 3])));
        assert_eq!(get_string("m"), Ok(Some("[1,2,3]".to_owned())));
        assert!(matches!(get_json::<String>("m"), Err(PluginError::Internal(_))));
        set("bin", &[0xff, 0xfe]).unwrap();
        assert!(matches!(get_string("bin"), Err(PluginError::Internal(_))));
        assert_eq!(list_keys(""), Ok(vec!["bin".to_owned(), "m".to_owned()]));
        delete("bin").unwrap();
        assert_eq!(list_keys("b"), Ok(vec![]));
    }

    #[test]
    fn host_failures_become_plugin_errors() {
        testing::reset();
        testing::fail_kv(Some(HostError::QuotaExceeded("kv_max_bytes".into())));
        assert_eq!(
            set_json("m", &1),
            Err(PluginError::Unavailable("quota exceeded: kv_max_bytes".into()))
        );
        testing::fail_kv(Some(HostError::Unavailable("db down".into())));
        assert_eq!(get_json::<u8>("m"), Err(PluginError::Unavailable("db down".into())));
        testing::fail_kv(None);
        assert_eq!(get_json::<u8>("m"), Ok(None));
    }
}
