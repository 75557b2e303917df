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
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| PluginError::InvalidConfig(format!("config is not JSON: {err}")))?;
    if !value.is_object() {
        return Err(PluginError::InvalidConfig("config is not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|err| PluginError::InvalidConfig(err.to_string()))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::testing;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Knobs {
        bonus: i64,
    }

    impl Default for Knobs {
        fn default() -> Self {
            Knobs { bonus: 7 }
        }
    }

    #[test]
    fn config_is_typed_and_errors_are_invalid_config() {
        testing::reset();
        assert_eq!(config::<Knobs>(), Ok(Knobs { bonus: 7 }));
        testing::set_config(serde_json::json!({"bonus": 3}));
        assert_eq!(config::<Knobs>(), Ok(Knobs { bonus: 3 }));
        assert_eq!(config_json(), r#"{"bonus":3}"#);
        for bad in [r#"{"bonus": "x"}"#, r#"{"other": 1}"#, "[]", "nope"] {
            testing::set_config_json(bad);
            assert!(matches!(config::<Knobs>(), Err(PluginError::InvalidConfig(_))), "{bad}");
        }
    }
}
