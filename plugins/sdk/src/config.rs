//! Capability `config`: this plugin's configuration for the calling tenant
//! (a JSON object, `{}` when none is set), typed with serde.
//!
//! On wasm32 it calls the host; natively it returns what the test set with
//! [`crate::testing::set_config`].

use serde::de::DeserializeOwned;

use crate::types::PluginError;

/// The configuration as the host gives it (JSON text).
pub fn config_json() -> String {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::scoring_rule::rapport::crm::config::get_config()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::config_json()
    }
}

/// The configuration decoded as `T` (typically a struct with
/// `#[serde(default, deny_unknown_fields)]`). Anything that is not a JSON
/// object, or does not decode, is `invalid-config` with serde's message.
pub fn config<T: DeserializeOwned>() -> Result<T, PluginError> {
    parse_config(&config_json())
}

/// [`config`] over given text (for plugins that validate further, and for
/// tests).
pub fn parse_config<T: DeserializeOwned>(text: &str) -> Result<T, PluginError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| PluginError::InvalidConfig(format!("config is not JSON: {err}")))?;
    if !value.is_object() {
        return Err(PluginError::InvalidConfig(
            "config is not a JSON object".into(),
        ));
    }
    serde_json::from_value(value).map_err(|err| PluginError::InvalidConfig(err.to_string()))
}
