//! A plugin's config schema: the JSON Schema (draft 2020-12 unless it says
//! otherwise) of its per-tenant config, declared in the manifest entry as
//! `[plugin.config_schema]` (see examples/plugins.toml and wit/README.md).
//!
//! One place for what the schema means to the host:
//! - **validation** with the `jsonschema` crate, of `PUT
//!   /v1/plugins/{id}/config` (422 with each violation's JSON pointer) and
//!   of the manifest's tenant configs (`file:line:col`); messages are the
//!   crate's, masked so they never echo the value itself;
//! - **defaults**: a property's `default` is filled in when the config
//!   leaves it out (recursively through nested objects), so the plugin and
//!   `GET /v1/plugins` see the config the plugin actually runs with;
//! - **secrets**: a property marked `"x-secret": true` or `"format":
//!   "secret"` takes a *reference*, `{"secret": "env:NAME"}` or `{"secret":
//!   "file:NAME"}`, never the secret itself (a plain value is refused, so
//!   none is ever stored). References are resolved by
//!   [`resolve_secrets`] only when the plugin is called; every response,
//!   log line, export and audit record holds the reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Environment variables a secret reference may name start with this, so a
/// tenant's config can never make the server hand a plugin its own
/// environment (`env:DATABASE_URL`).
pub const ENV_PREFIX: &str = "RAPPORT_SECRET_";

/// One way a config breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Violation {
    /// JSON pointer (RFC 6901) of the offending value; empty for the root.
    pub pointer: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() { "/" } else { &self.pointer };
        write!(f, "{at}: {}", self.message)
    }
}

/// Checks that `schema` is a usable JSON Schema (an object that compiles;
/// no remote references: the crate is built without resolvers).
pub fn check_schema(schema: &Value) -> Result<(), String> {
    if !schema.is_object() {
        return Err("a config schema must be a table (a JSON Schema object)".into());
    }
    if !jsonschema::meta::is_valid(schema) {
        let first = jsonschema::meta::validate(schema)
            .err()
            .map(|e| format!("{}: {}", e.instance_path(), e.masked()))
            .unwrap_or_default();
        return Err(format!("not a valid JSON Schema: {first}"));
    }
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| format!("not a usable JSON Schema: {}", e.masked()))
}

/// True for a property schema that marks a secret.
fn is_secret(property: &Value) -> bool {
    property.get("x-secret").and_then(Value::as_bool) == Some(true)
        || property.get("format").and_then(Value::as_str) == Some("secret")
}

/// The reference text of a secret reference (`{"secret": "env:X"}`).
pub fn reference(value: &Value) -> Option<&str> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.get("secret")?.as_str()
}

fn check_reference(text: &str) -> Result<(), String> {
    let ok = match text.split_once(':') {
        Some(("env", name)) => {
            name.starts_with(ENV_PREFIX)
                && name.len() > ENV_PREFIX.len()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        }
        Some(("file", name)) => {
            !name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a secret reference is \"env:{ENV_PREFIX}NAME\" (upper-case letters, digits, '_') or \"file:NAME\" (a key of the server's secrets file)"
        ))
    }
}

fn pointer_push(at: &str, key: &str) -> String {
    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Walks the (object) properties of `schema` alongside `config`, calling
/// `f(pointer, property_schema, value)` for each secret property present.
fn each_secret<'v>(schema: &Value, config: &'v mut Value, at: &str, f: &mut dyn FnMut(&str, &'v mut Value)) {
    let (Some(props), Some(map)) = (
        schema.get("properties").and_then(Value::as_object),
        config.as_object_mut(),
    ) else {
        return;
    };
    for (key, value) in map.iter_mut() {
        let Some(prop) = props.get(key) else { continue };
        let here = pointer_push(at, key);
        if is_secret(prop) {
            f(&here, value);
        } else {
            each_secret(prop, value, &here, f);
        }
    }
}

/// `schema` with each secret property's own schema replaced by `true`
/// (anything): a config holds the reference there, which [`validate`]
/// checks itself; the secret's value, unknown here, is the plugin's to
/// check when it runs. `required` and everything else still apply.
fn relax_secrets(schema: &Value) -> Value {
    let mut out = schema.clone();
    if let Some(props) = out.get_mut("properties").and_then(Value::as_object_mut) {
        for prop in props.values_mut() {
            *prop = if is_secret(prop) {
                Value::Bool(true)
            } else {
                relax_secrets(prop)
            };
        }
    }
    out
}

/// Validates `config` against `schema`: secret properties must hold a
/// well-formed reference (their own constraints apply to the resolved
/// value, which only the plugin sees), everything else must satisfy the
/// schema. Every violation is returned.
pub fn validate(schema: &Value, config: &Value) -> Result<(), Vec<Violation>> {
    let mut violations = Vec::new();
    let mut checked = config.clone();
    each_secret(schema, &mut checked, "", &mut |pointer, value| {
        let problem = match reference(value) {
            Some(text) => check_reference(text).err(),
            None => Some(
                "a secret field takes a reference, {\"secret\": \"env:NAME\"} or {\"secret\": \"file:NAME\"}, never the secret itself"
                    .to_string(),
            ),
        };
        if let Some(message) = problem {
            violations.push(Violation {
                pointer: pointer.to_string(),
                message,
            });
            // Never let the schema's message echo the value either.
            *value = Value::Null;
        }
    });
    match jsonschema::validator_for(&relax_secrets(schema)) {
        Ok(validator) => {
            for e in validator.iter_errors(&checked) {
                violations.push(Violation {
                    pointer: e.instance_path().as_str().to_string(),
                    message: e.masked().to_string(),
                });
            }
        }
        Err(e) => violations.push(Violation {
            pointer: String::new(),
            message: format!("the plugin's config schema does not compile: {}", e.masked()),
        }),
    }
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}

/// `config` with every absent property that has a `default` filled in,
/// recursively through nested object properties.
pub fn with_defaults(schema: &Value, config: &Value) -> Value {
    let mut out = config.clone();
    fill(schema, &mut out);
    out
}

fn fill(schema: &Value, value: &mut Value) {
    let (Some(props), Some(map)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object_mut(),
    ) else {
        return;
    };
    for (key, prop) in props {
        match map.get_mut(key) {
            Some(present) => fill(prop, present),
            None => {
                if let Some(default) = prop.get("default") {
                    let mut default = default.clone();
                    fill(prop, &mut default);
                    map.insert(key.clone(), default);
                }
            }
        }
    }
}

/// Where secret references are resolved: the process environment (names
/// starting [`ENV_PREFIX`]) and an optional secrets file (TOML, one `name
/// = "value"` per secret) named by the server config.
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    pub file: Option<PathBuf>,
}

impl SecretSource {
    fn lookup(&self, text: &str) -> Result<String, String> {
        check_reference(text)?;
        match text.split_once(':') {
            Some(("env", name)) => std::env::var(name).map_err(|_| format!("secret {text:?} is not set")),
            Some(("file", name)) => {
                let path = self
                    .file
                    .as_deref()
                    .ok_or_else(|| format!("secret {text:?}: the server config names no secrets file"))?;
                read_secrets_file(path)?
                    .remove(name)
                    .ok_or_else(|| format!("secret {text:?} is not in the secrets file"))
            }
            _ => Err(format!("secret {text:?}: unknown source")),
        }
    }
}

/// Read at each resolution (not cached), so rotating a secret in the file
/// takes effect on the next call without a restart.
fn read_secrets_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("secrets file unreadable: {e}"))?;
    // The error never quotes the file's contents, which are secrets.
    toml::from_str(&text).map_err(|_| "the secrets file is not a TOML table of strings".to_string())
}

/// `config` with each secret reference replaced by the secret's value: what
/// the plugin receives, and nothing else ever sees. Also returns the values,
/// so what comes back from the call (its error, its log lines) can be
/// scrubbed of them with [`scrub`]. Errors name the reference, never a value.
pub fn resolve_secrets(schema: &Value, config: &Value, source: &SecretSource) -> Result<(Value, Vec<String>), String> {
    let mut out = config.clone();
    let mut error = None;
    let mut values = Vec::new();
    each_secret(schema, &mut out, "", &mut |pointer, value| {
        if error.is_some() {
            return;
        }
        if let Some(text) = reference(value).map(str::to_owned) {
            match source.lookup(&text) {
                Ok(secret) => {
                    if !secret.is_empty() {
                        values.push(secret.clone());
                    }
                    *value = Value::String(secret);
                }
                Err(e) => error = Some(format!("{pointer}: {e}")),
            }
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok((out, values)),
    }
}

/// `text` with every occurrence of a secret value replaced by
/// `[redacted]`: a plugin that echoes its config in an error or a log line
/// must not put the secret in `last_error`, the run history or a response.
pub fn scrub(text: &mut String, secrets: &[String]) {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), "[redacted]");
        }
    }
}

/// Whether the schema marks any secret (callers skip resolution otherwise).
pub fn has_secrets(schema: &Value) -> bool {
    fn walk(schema: &Value) -> bool {
        schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|props: &Map<String, Value>| props.values().any(|p| is_secret(p) || walk(p)))
    }
    walk(schema)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "window_days": { "type": "integer", "minimum": 1, "default": 90 },
                "nested": { "type": "object", "properties": { "k": { "type": "string", "default": "v" } }, "default": {} },
                "signing_secret": { "type": "string", "x-secret": true, "minLength": 4 }
            }
        })
    }

    #[test]
    fn violations_carry_pointers() {
        let err = validate(&schema(), &json!({ "window_day": 30, "window_days": 0 })).unwrap_err();
        let pointers: Vec<&str> = err.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/window_days"), "{err:?}");
        assert!(pointers.contains(&""), "{err:?}");
    }

    #[test]
    fn defaults_fill_recursively() {
        let filled = with_defaults(&schema(), &json!({}));
        assert_eq!(filled, json!({ "window_days": 90, "nested": { "k": "v" } }));
    }

    #[test]
    fn secrets_take_references_only() {
        let err = validate(&schema(), &json!({ "signing_secret": "whsec_plain" })).unwrap_err();
        assert_eq!(err[0].pointer, "/signing_secret");
        assert!(err.iter().all(|v| !v.message.contains("whsec_plain")), "{err:?}");
        assert!(validate(&schema(), &json!({ "signing_secret": { "secret": "env:PATH" } })).is_err());
        validate(
            &schema(),
            &json!({ "signing_secret": { "secret": "env:RAPPORT_SECRET_X" } }),
        )
        .unwrap();
        validate(&schema(), &json!({ "signing_secret": { "secret": "file:hook-key" } })).unwrap();
    }
}
