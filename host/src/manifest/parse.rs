//! Manifest parsing and validation, collecting every issue with its span.
//!
//! The document is first parsed into toml's span-preserving tree
//! (`DeTable`); each `[[plugin]]` and `[[tenant]]` entry is then deserialized
//! on its own, so a type error in one entry does not hide the problems of
//! the others. Fields checked after deserialization are `Spanned`, and serde
//! errors are mapped back to a field path by locating their span in the
//! tree.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{
    Capability, DeliveryPolicy, HostPattern, Limits, Manifest, ManifestIssue, PluginKind, PluginSpec,
    SUPPORTED_CONTRACTS, TenantPlugin, TenantPlugins,
};
use crate::config::line_col;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    id: Spanned<String>,
    kind: Spanned<String>,
    version: Spanned<String>,
    contract: Spanned<String>,
    artifact: Spanned<String>,
    sha256: Spanned<String>,
    #[serde(default)]
    capabilities: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    allowed_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    channels: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    delivery: Option<Spanned<RawDelivery>>,
    /// JSON Schema of the per-tenant config, as a TOML table.
    #[serde(default)]
    config_schema: Option<Spanned<toml::Table>>,
    /// Or: a JSON file holding it (relative to the manifest), e.g. the
    /// `config.schema.json` a plugin crate ships.
    #[serde(default)]
    config_schema_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    max_attempts: Option<Spanned<u64>>,
    max_age_s: Option<Spanned<u64>>,
    backoff_initial_ms: Option<Spanned<u64>>,
    backoff_max_ms: Option<Spanned<u64>>,
    rate_per_second: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout_ms: Option<Spanned<u64>>,
    fuel: Option<Spanned<u64>>,
    memory_mb: Option<Spanned<u64>>,
    stack_kb: Option<Spanned<u64>>,
    max_output_bytes: Option<Spanned<u64>>,
    max_log_bytes: Option<Spanned<u64>>,
    max_consecutive_failures: Option<Spanned<u64>>,
    kv_max_bytes: Option<Spanned<u64>>,
    http_timeout_ms: Option<Spanned<u64>>,
    http_max_response_bytes: Option<Spanned<u64>>,
    smtp_timeout_ms: Option<Spanned<u64>>,
    smtp_max_message_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: Spanned<String>,
    #[serde(default)]
    message_rate_per_second: Option<Spanned<u64>>,
    #[serde(default)]
    plugin: Vec<RawTenantPlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantPlugin {
    id: Spanned<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    config: Option<Spanned<toml::Table>>,
}

fn yes() -> bool {
    true
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Inclusive ranges for each limit. Wide enough for real plugins, narrow
/// enough that a typo (an extra zero or three) is caught rather than obeyed.
const LIMIT_RANGES: &[(&str, u64, u64, &str)] = &[
    ("timeout_ms", 1, 60_000, "1 to 60000 (one minute)"),
    ("fuel", 1_000, 1_000_000_000_000, "1000 to 10^12"),
    ("memory_mb", 1, 4096, "1 to 4096"),
    ("stack_kb", 16, 16 * KIB, "16 to 16384"),
    ("max_output_bytes", 1, 64 * MIB, "1 to 67108864 (64 MiB)"),
    ("max_log_bytes", 0, MIB, "0 to 1048576 (1 MiB)"),
    ("max_consecutive_failures", 1, 1000, "1 to 1000"),
    ("kv_max_bytes", 0, 1024 * MIB, "0 to 1073741824 (1 GiB)"),
    // Network limits of connectors. Timeouts up to the longest call
    // deadline (a longer one could never be reached); sizes up to what one
    // call may sensibly hold in memory.
    ("http_timeout_ms", 1, 60_000, "1 to 60000 (one minute)"),
    ("http_max_response_bytes", 1, 64 * MIB, "1 to 67108864 (64 MiB)"),
    ("smtp_timeout_ms", 1, 60_000, "1 to 60000 (one minute)"),
    ("smtp_max_message_bytes", KIB, 64 * MIB, "1024 to 67108864 (64 MiB)"),
];

/// Inclusive ranges of `[plugin.delivery]` and `message_rate_per_second`.
const DELIVERY_RANGES: &[(&str, u64, u64, &str)] = &[
    ("max_attempts", 1, 1000, "1 to 1000"),
    ("max_age_s", 1, 30 * 86_400, "1 to 2592000 (30 days)"),
    ("backoff_initial_ms", 1, 3_600_000, "1 to 3600000 (one hour)"),
    ("backoff_max_ms", 1, 86_400_000, "1 to 86400000 (one day)"),
    ("rate_per_second", 1, 1_000_000, "1 to 1000000"),
    ("message_rate_per_second", 1, 1_000_000, "1 to 1000000"),
];

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    issues: Vec<ManifestIssue>,
    /// Problems with an artifact file (missing, changed): kept apart, since
    /// a server still starts without that one plugin (see `parse`).
    artifact_issues: Vec<ManifestIssue>,
    /// The same, by plugin id, worded for tenants (no server path).
    artifact_problems: std::collections::BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn located(&self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) -> ManifestIssue {
        let (line, column) = line_col(self.text, span.start);
        ManifestIssue {
            path: self.path.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }

    fn issue(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let issue = self.located(span, field, message);
        self.issues.push(issue);
    }

    fn artifact_issue(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        plugin: &str,
        reason: String,
    ) {
        let issue = self.located(span, field, message);
        self.artifact_issues.push(issue);
        self.artifact_problems
            .insert(plugin.to_string(), format!("plugin `{plugin}`: {reason}"));
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    /// Deserializes one entry; a failure becomes an issue located at the
    /// field the error's span falls in.
    fn entry<T: serde::de::DeserializeOwned>(&mut self, value: &Spanned<DeValue<'_>>, prefix: &str) -> Option<T> {
        let mut owned = value.clone();
        owned.get_mut().make_owned();
        match T::deserialize(ValueDeserializer::from(owned)) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                let mut field = prefix.to_string();
                locate(value.get_ref(), span.start, &mut field);
                self.issue(span, field, e.message().trim().to_string());
                None
            }
        }
    }
}

/// Appends to `path` the field path of the deepest key or value containing
/// `offset`. Returns whether something was found.
fn locate(value: &DeValue<'_>, offset: usize, path: &mut String) -> bool {
    match value {
        DeValue::Table(table) => {
            for (key, child) in table.iter() {
                let mark = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                push_key(path, key.get_ref());
                if key.span().contains(&offset)
                    || locate(child.get_ref(), offset, path)
                    || child.span().contains(&offset)
                {
                    return true;
                }
                path.truncate(mark);
            }
            false
        }
        DeValue::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let mark = path.len();
                path.push_str(&format!("[{i}]"));
                if locate(child.get_ref(), offset, path) || child.span().contains(&offset) {
                    return true;
                }
                path.truncate(mark);
            }
            false
        }
        _ => false,
    }
}

/// Bare keys as is; anything else quoted, as TOML would need it.
fn push_key(path: &mut String, key: &str) {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        path.push_str(key);
    } else {
        path.push_str(&format!("{key:?}"));
    }
}

/// Plugin ids: 1-64 of `a-z 0-9 - _` (they appear in URLs, metrics and logs).
fn valid_plugin_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Semantic version 2.0.0: `MAJOR.MINOR.PATCH[-pre][+build]`, no leading zeros.
fn valid_semver(v: &str) -> bool {
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    let idents = |s: &str| {
        s.split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| numeric(p)) && pre.is_none_or(idents) && build.is_none_or(idents)
}

/// The manifest and the problems of its artifact files, or every problem
/// (artifacts included) when the manifest itself is invalid. A plugin whose
/// artifact is missing or changed is still in the manifest: the server
/// marks it unavailable and serves the others; `rapport manifest check`
/// refuses it.
pub(super) fn parse(path: &Path, text: &str) -> Result<(Manifest, Vec<ManifestIssue>), Vec<ManifestIssue>> {
    let mut cx = Ctx {
        path,
        text,
        issues: Vec::new(),
        artifact_issues: Vec::new(),
        artifact_problems: Default::default(),
    };
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            cx.issue(e.span().unwrap_or(0..0), "", e.message().trim().to_string());
            return Err(cx.issues);
        }
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = std::path::absolute(if base_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &base_dir
    })
    .unwrap_or(base_dir);

    let mut raw_plugins: Vec<(usize, RawPlugin)> = Vec::new();
    let mut raw_tenants: Vec<(usize, RawTenant)> = Vec::new();
    // Ids of every syntactically present plugin, even one with other errors,
    // so that a tenant naming it is not reported as "unknown" on top.
    let mut declared: HashSet<String> = HashSet::new();
    for (key, value) in root.get_ref().iter() {
        let name = key.get_ref().as_ref();
        let items = match (name, value.get_ref()) {
            ("plugin" | "tenant", DeValue::Array(items)) => items,
            ("plugin" | "tenant", _) => {
                cx.issue(value.span(), name, format!("expected an array of tables ([[{name}]])"));
                continue;
            }
            _ => {
                cx.issue(
                    key.span(),
                    name,
                    format!("unknown top-level key `{name}`; expected `plugin` or `tenant`"),
                );
                continue;
            }
        };
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("{name}[{i}]");
            if !item.get_ref().is_table() {
                cx.issue(item.span(), prefix, "expected a table");
                continue;
            }
            if name == "plugin" {
                if let Some(id) = item.get_ref().get("id").and_then(|v| v.get_ref().as_str()) {
                    declared.insert(id.to_string());
                }
                if let Some(p) = cx.entry::<RawPlugin>(item, &prefix) {
                    raw_plugins.push((i, p));
                }
            } else if let Some(t) = cx.entry::<RawTenant>(item, &prefix) {
                raw_tenants.push((i, t));
            }
        }
    }

    let mut plugins = Vec::new();
    let mut first_plugin: HashMap<String, usize> = HashMap::new();
    for (i, raw) in raw_plugins {
        let spec = validate_plugin(&mut cx, &base_dir, i, raw, &mut first_plugin);
        plugins.extend(spec);
    }

    let schemas: HashMap<String, serde_json::Value> = plugins
        .iter()
        .filter_map(|p: &PluginSpec| Some((p.id.clone(), p.config_schema.clone()?)))
        .collect();
    let mut tenants = Vec::new();
    let mut first_tenant: HashMap<String, usize> = HashMap::new();
    for (j, raw) in raw_tenants {
        tenants.extend(validate_tenant(&mut cx, j, raw, &declared, &schemas, &mut first_tenant));
    }

    let mut artifact_issues = cx.artifact_issues;
    artifact_issues.sort_by_key(|i| (i.line, i.column));
    if cx.issues.is_empty() {
        let manifest = Manifest {
            path: path.to_path_buf(),
            plugins,
            tenants,
            loaded_at: time::OffsetDateTime::now_utc(),
            artifact_problems: cx.artifact_problems,
        };
        Ok((manifest, artifact_issues))
    } else {
        let mut issues = cx.issues;
        issues.extend(artifact_issues);
        issues.sort_by_key(|i| (i.line, i.column));
        Err(issues)
    }
}

fn validate_plugin(
    cx: &mut Ctx<'_>,
    base_dir: &Path,
    i: usize,
    raw: RawPlugin,
    first: &mut HashMap<String, usize>,
) -> Option<PluginSpec> {
    let before = cx.issues.len();
    let f = |name: &str| format!("plugin[{i}].{name}");

    let id = raw.id.get_ref().clone();
    if !valid_plugin_id(&id) {
        cx.issue(
            raw.id.span(),
            f("id"),
            format!("invalid plugin id {id:?}: use 1-64 characters of a-z, 0-9, '-' and '_'"),
        );
    } else if let Some(line) = first.get(&id) {
        cx.issue(
            raw.id.span(),
            f("id"),
            format!("duplicate plugin id {id:?} (first declared at line {line})"),
        );
    } else {
        first.insert(id.clone(), cx.line_of(&raw.id.span()));
    }

    let kind = PluginKind::parse(raw.kind.get_ref());
    if kind.is_none() {
        let expected: Vec<&str> = PluginKind::ALL.iter().map(|k| k.as_str()).collect();
        cx.issue(
            raw.kind.span(),
            f("kind"),
            format!(
                "unknown kind {:?}; expected one of {}",
                raw.kind.get_ref(),
                expected.join(", ")
            ),
        );
    }

    if !valid_semver(raw.version.get_ref()) {
        cx.issue(
            raw.version.span(),
            f("version"),
            format!(
                "{:?} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 0.1.0)",
                raw.version.get_ref()
            ),
        );
    }

    if !SUPPORTED_CONTRACTS.contains(&raw.contract.get_ref().as_str()) {
        cx.issue(
            raw.contract.span(),
            f("contract"),
            format!(
                "unsupported contract {:?}; this host supports {}",
                raw.contract.get_ref(),
                SUPPORTED_CONTRACTS.join(", ")
            ),
        );
    }

    let sha_text = raw.sha256.get_ref().trim();
    let sha_ok = sha_text.len() == 64 && sha_text.bytes().all(|b| b.is_ascii_hexdigit());
    let sha256 = sha_text.to_ascii_lowercase();
    if !sha_ok {
        cx.issue(
            raw.sha256.span(),
            f("sha256"),
            "expected 64 hexadecimal characters (the artifact's SHA-256 digest)",
        );
    }

    // Capabilities, and the rules tying them to the kind and allowed_hosts.
    let mut capabilities = BTreeSet::new();
    let mut outbound_span = None;
    if let Some(caps) = &raw.capabilities {
        for (k, cap) in caps.get_ref().iter().enumerate() {
            let field = format!("plugin[{i}].capabilities[{k}]");
            match Capability::parse(cap.get_ref()) {
                None => {
                    let expected: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
                    cx.issue(
                        cap.span(),
                        field,
                        format!(
                            "unknown capability {:?}; expected one of {}",
                            cap.get_ref(),
                            expected.join(", ")
                        ),
                    );
                }
                Some(c) if !capabilities.insert(c) => {
                    cx.issue(
                        cap.span(),
                        field,
                        format!("capability {:?} is listed twice", cap.get_ref()),
                    );
                }
                Some(c) if c.connector_only() => {
                    outbound_span = Some((cap.span(), c));
                    if kind.is_some_and(|k| k != PluginKind::ChannelConnector) {
                        cx.issue(
                            cap.span(),
                            field,
                            format!("{c} is only granted to channel-connector plugins"),
                        );
                    }
                }
                Some(_) => {}
            }
        }
    }
    let mut allowed_hosts = Vec::new();
    match (&raw.allowed_hosts, outbound_span) {
        (Some(hosts), None) if !hosts.get_ref().is_empty() => {
            cx.issue(
                hosts.span(),
                f("allowed_hosts"),
                "allowed_hosts requires the outbound-http capability",
            );
        }
        (hosts, Some((cap_span, cap))) if hosts.as_ref().is_none_or(|h| h.get_ref().is_empty()) => {
            cx.issue(
                cap_span,
                f("capabilities"),
                format!("{cap} needs at least one allowed_hosts entry (it would reach nothing)"),
            );
        }
        _ => {}
    }
    if let Some(hosts) = &raw.allowed_hosts {
        for (k, host) in hosts.get_ref().iter().enumerate() {
            match HostPattern::parse(host.get_ref()) {
                Ok(p) => allowed_hosts.push(p),
                Err(message) => cx.issue(host.span(), format!("plugin[{i}].allowed_hosts[{k}]"), message),
            }
        }
    }

    let limits = validate_limits(cx, i, raw.limits.unwrap_or_default(), &capabilities);
    let is_connector = kind == Some(PluginKind::ChannelConnector);
    let channels = validate_channels(cx, i, &raw.kind, kind, raw.channels.as_ref());
    let delivery = match &raw.delivery {
        Some(d) if kind.is_some() && !is_connector => {
            cx.issue(
                d.span(),
                f("delivery"),
                "[plugin.delivery] applies to channel-connector plugins only",
            );
            DeliveryPolicy::default()
        }
        Some(d) => validate_delivery(cx, i, d),
        None => DeliveryPolicy::default(),
    };

    // The artifact last: reading it is the expensive part and pointless if
    // the digest itself is malformed.
    let artifact_text = raw.artifact.get_ref();
    let artifact = base_dir.join(artifact_text);
    if artifact_text.trim().is_empty() {
        cx.issue(raw.artifact.span(), f("artifact"), "artifact path is empty");
    } else {
        match std::fs::metadata(&artifact) {
            Err(e) => cx.artifact_issue(
                raw.artifact.span(),
                f("artifact"),
                format!("cannot read artifact {}: {e}", artifact.display()),
                &id,
                format!("its artifact cannot be read: {e}"),
            ),
            Ok(meta) if !meta.is_file() => cx.artifact_issue(
                raw.artifact.span(),
                f("artifact"),
                format!("artifact {} is not a file", artifact.display()),
                &id,
                "its artifact is not a file".into(),
            ),
            Ok(_) if sha_ok => match super::sha256_file(&artifact) {
                Err(e) => cx.artifact_issue(
                    raw.artifact.span(),
                    f("artifact"),
                    format!("cannot read artifact {}: {e}", artifact.display()),
                    &id,
                    format!("its artifact cannot be read: {e}"),
                ),
                Ok(actual) if actual != sha256 => cx.artifact_issue(
                    raw.sha256.span(),
                    f("sha256"),
                    format!(
                        "digest mismatch: {} has sha256 {actual}, the manifest says {sha256}",
                        artifact.display()
                    ),
                    &id,
                    format!("sha256 mismatch: declared {sha256}, actual {actual}"),
                ),
                Ok(_) => {}
            },
            Ok(_) => {}
        }
    }

    let config_schema = match (raw.config_schema, raw.config_schema_file) {
        (Some(_), Some(file)) => {
            cx.issue(
                file.span(),
                f("config_schema_file"),
                "give the config schema inline (config_schema) or as a file (config_schema_file), not both",
            );
            None
        }
        (Some(table), None) => {
            let span = table.span();
            match table_to_json(table.get_ref(), &f("config_schema")) {
                Ok(schema) => Some((span, f("config_schema"), schema)),
                Err((at, message)) => {
                    cx.issue(span, at, message);
                    None
                }
            }
        }
        (None, Some(file)) => {
            let span = file.span();
            let path = base_dir.join(file.get_ref());
            let read = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|text| {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .map_err(|e| format!("{}: not JSON: {e}", path.display()))
                });
            match read {
                Ok(schema) => Some((span, f("config_schema_file"), schema)),
                Err(message) => {
                    cx.issue(span, f("config_schema_file"), message);
                    None
                }
            }
        }
        (None, None) => None,
    }
    .and_then(
        |(span, field, schema)| match super::config_schema::check_schema(&schema) {
            Ok(()) => Some(schema),
            Err(message) => {
                cx.issue(span, field, message);
                None
            }
        },
    );

    if cx.issues.len() != before {
        return None;
    }
    Some(PluginSpec {
        id,
        kind: kind?,
        version: raw.version.into_inner(),
        contract: raw.contract.into_inner(),
        artifact,
        sha256,
        capabilities,
        allowed_hosts,
        limits,
        channels,
        delivery,
        config_schema,
    })
}

/// `channels`: required (non-empty) for channel connectors, refused for
/// every other kind; each a valid channel name, none twice.
fn validate_channels(
    cx: &mut Ctx<'_>,
    i: usize,
    kind_span: &Spanned<String>,
    kind: Option<PluginKind>,
    raw: Option<&Spanned<Vec<Spanned<String>>>>,
) -> Vec<String> {
    let field = format!("plugin[{i}].channels");
    let mut channels = Vec::new();
    match (kind, raw) {
        (None, _) => {}
        (Some(PluginKind::ChannelConnector), None) => cx.issue(
            kind_span.span(),
            field,
            "a channel-connector must list the channels it serves, e.g. channels = [\"email\"]",
        ),
        (Some(PluginKind::ChannelConnector), Some(list)) if list.get_ref().is_empty() => cx.issue(
            list.span(),
            field,
            "a channel-connector must serve at least one channel",
        ),
        (Some(PluginKind::ChannelConnector), Some(list)) => {
            for (k, channel) in list.get_ref().iter().enumerate() {
                let name = channel.get_ref();
                if let Err(e) = crate::store::messages::validate_channel("channel", name) {
                    let message = match e {
                        crate::store::StoreError::Invalid { message, .. } => message,
                        other => other.to_string(),
                    };
                    cx.issue(channel.span(), format!("{field}[{k}]"), message);
                } else if channels.contains(name) {
                    cx.issue(
                        channel.span(),
                        format!("{field}[{k}]"),
                        format!("channel {name:?} is listed twice"),
                    );
                } else {
                    channels.push(name.clone());
                }
            }
        }
        (Some(_), Some(list)) => cx.issue(list.span(), field, "channels applies to channel-connector plugins only"),
        (Some(_), None) => {}
    }
    channels
}

fn check_range(cx: &mut Ctx<'_>, field: String, name: &str, value: &Option<Spanned<u64>>) -> Option<u64> {
    let value = value.as_ref()?;
    let (_, min, max, text) = DELIVERY_RANGES.iter().find(|(n, ..)| *n == name)?;
    let v = *value.get_ref();
    if v < *min || v > *max {
        cx.issue(value.span(), field, format!("{v} is out of range: expected {text}"));
        return None;
    }
    Some(v)
}

fn validate_delivery(cx: &mut Ctx<'_>, i: usize, raw: &Spanned<RawDelivery>) -> DeliveryPolicy {
    let f = |name: &str| format!("plugin[{i}].delivery.{name}");
    let d = raw.get_ref();
    let mut policy = DeliveryPolicy::default();
    // Ranges keep every value far below u32::MAX, so the conversions hold.
    if let Some(v) = check_range(cx, f("max_attempts"), "max_attempts", &d.max_attempts) {
        policy.max_attempts = u32::try_from(v).unwrap_or(u32::MAX);
    }
    if let Some(v) = check_range(cx, f("max_age_s"), "max_age_s", &d.max_age_s) {
        policy.max_age_s = v;
    }
    if let Some(v) = check_range(cx, f("backoff_initial_ms"), "backoff_initial_ms", &d.backoff_initial_ms) {
        policy.backoff_initial_ms = v;
    }
    if let Some(v) = check_range(cx, f("backoff_max_ms"), "backoff_max_ms", &d.backoff_max_ms) {
        policy.backoff_max_ms = v;
    }
    if let Some(v) = check_range(cx, f("rate_per_second"), "rate_per_second", &d.rate_per_second) {
        policy.rate_per_second = Some(u32::try_from(v).unwrap_or(u32::MAX));
    }
    if policy.backoff_initial_ms > policy.backoff_max_ms {
        let span = d
            .backoff_initial_ms
            .as_ref()
            .or(d.backoff_max_ms.as_ref())
            .map_or(raw.span(), |v| v.span());
        cx.issue(
            span,
            f("backoff_initial_ms"),
            format!(
                "backoff_initial_ms ({}) must not exceed backoff_max_ms ({})",
                policy.backoff_initial_ms, policy.backoff_max_ms
            ),
        );
    }
    policy
}

fn validate_limits(cx: &mut Ctx<'_>, i: usize, raw: RawLimits, capabilities: &BTreeSet<Capability>) -> Limits {
    let mut limits = Limits::default();
    // The network limits apply to one capability each; set on a plugin
    // without it they would limit nothing, which is an error (like
    // `allowed_hosts` without `outbound-http`) rather than a silent no-op.
    let needs = |name: &str| match name {
        "http_timeout_ms" | "http_max_response_bytes" => Some(Capability::OutboundHttp),
        "smtp_timeout_ms" | "smtp_max_message_bytes" => Some(Capability::OutboundSmtp),
        _ => None,
    };
    let mut check = |name: &str, value: &Option<Spanned<u64>>| -> Option<u64> {
        let value = value.as_ref()?;
        if let Some(cap) = needs(name).filter(|c| !capabilities.contains(c)) {
            cx.issue(
                value.span(),
                format!("plugin[{i}].limits.{name}"),
                format!("{name} applies to plugins with the {cap} capability only"),
            );
            return None;
        }
        let (_, min, max, text) = LIMIT_RANGES.iter().find(|(n, ..)| *n == name)?;
        let v = *value.get_ref();
        if v < *min || v > *max {
            cx.issue(
                value.span(),
                format!("plugin[{i}].limits.{name}"),
                format!("{v} is out of range: expected {text}"),
            );
            return None;
        }
        Some(v)
    };
    if let Some(v) = check("timeout_ms", &raw.timeout_ms) {
        limits.timeout_ms = v;
    }
    limits.fuel = check("fuel", &raw.fuel);
    if let Some(v) = check("memory_mb", &raw.memory_mb) {
        limits.memory_mb = v;
    }
    if let Some(v) = check("stack_kb", &raw.stack_kb) {
        limits.stack_kb = v;
    }
    if let Some(v) = check("max_output_bytes", &raw.max_output_bytes) {
        limits.max_output_bytes = v;
    }
    if let Some(v) = check("max_log_bytes", &raw.max_log_bytes) {
        limits.max_log_bytes = v;
    }
    if let Some(v) = check("max_consecutive_failures", &raw.max_consecutive_failures) {
        // In range 1..=1000, so the conversion cannot fail.
        limits.max_consecutive_failures = u32::try_from(v).unwrap_or(u32::MAX);
    }
    if let Some(v) = check("kv_max_bytes", &raw.kv_max_bytes) {
        limits.kv_max_bytes = v;
    }
    if let Some(v) = check("http_timeout_ms", &raw.http_timeout_ms) {
        limits.http_timeout_ms = v;
    }
    if let Some(v) = check("http_max_response_bytes", &raw.http_max_response_bytes) {
        limits.http_max_response_bytes = v;
    }
    if let Some(v) = check("smtp_timeout_ms", &raw.smtp_timeout_ms) {
        limits.smtp_timeout_ms = v;
    }
    if let Some(v) = check("smtp_max_message_bytes", &raw.smtp_max_message_bytes) {
        limits.smtp_max_message_bytes = v;
    }
    limits
}

fn validate_tenant(
    cx: &mut Ctx<'_>,
    j: usize,
    raw: RawTenant,
    declared: &HashSet<String>,
    schemas: &HashMap<String, serde_json::Value>,
    first: &mut HashMap<String, usize>,
) -> Option<TenantPlugins> {
    let before = cx.issues.len();
    let tenant = raw.id.get_ref().clone();
    if let Err(e) = crate::store::tenants::validate_tenant_id(&tenant) {
        let message = match e {
            crate::store::StoreError::Invalid { message, .. } => message,
            other => other.to_string(),
        };
        cx.issue(
            raw.id.span(),
            format!("tenant[{j}].id"),
            format!("invalid tenant id {tenant:?}: {message}"),
        );
    } else if let Some(line) = first.get(&tenant) {
        cx.issue(
            raw.id.span(),
            format!("tenant[{j}].id"),
            format!(
                "duplicate tenant {tenant:?} (first declared at line {line}); list all its plugins in one [[tenant]]"
            ),
        );
    } else {
        first.insert(tenant.clone(), cx.line_of(&raw.id.span()));
    }

    let mut plugins = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (k, entry) in raw.plugin.into_iter().enumerate() {
        let field = format!("tenant[{j}].plugin[{k}]");
        let plugin = entry.id.get_ref().clone();
        if !declared.contains(&plugin) {
            cx.issue(
                entry.id.span(),
                format!("{field}.id"),
                format!("unknown plugin {plugin:?}: no [[plugin]] has this id"),
            );
        } else if let Some(line) = seen.get(&plugin) {
            cx.issue(
                entry.id.span(),
                format!("{field}.id"),
                format!("plugin {plugin:?} is listed twice for tenant {tenant:?} (first at line {line})"),
            );
        } else {
            seen.insert(plugin.clone(), cx.line_of(&entry.id.span()));
        }
        // Where a schema violation is reported: the config table, or the
        // entry's id when the config is absent (a required key missing).
        let config_span = entry.config.as_ref().map_or_else(|| entry.id.span(), |t| t.span());
        let config = match entry.config {
            None => serde_json::Value::Object(Default::default()),
            Some(table) => {
                let span = table.span();
                match table_to_json(table.get_ref(), &format!("{field}.config")) {
                    Ok(v) => v,
                    Err((at, message)) => {
                        cx.issue(span, at, message);
                        serde_json::Value::Null
                    }
                }
            }
        };
        if let Some(schema) = schemas.get(&plugin)
            && config.is_object()
        {
            let filled = super::config_schema::with_defaults(schema, &config);
            if let Err(violations) = super::config_schema::validate(schema, &filled) {
                for v in violations {
                    cx.issue(
                        config_span.clone(),
                        format!("{field}.config"),
                        format!("does not match the plugin's config_schema: {v}"),
                    );
                }
            }
        }
        plugins.push(TenantPlugin {
            plugin,
            enabled: entry.enabled,
            config,
        });
    }
    let message_rate_per_second = check_range(
        cx,
        format!("tenant[{j}].message_rate_per_second"),
        "message_rate_per_second",
        &raw.message_rate_per_second,
    )
    .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    (cx.issues.len() == before).then_some(TenantPlugins {
        tenant,
        plugins,
        message_rate_per_second,
    })
}

/// TOML to the JSON a plugin receives. Datetimes become their RFC 3339
/// text; non-finite floats have no JSON form and are refused.
fn table_to_json(table: &toml::Table, field: &str) -> Result<serde_json::Value, (String, String)> {
    let mut out = serde_json::Map::new();
    for (key, value) in table {
        let mut path = field.to_string();
        path.push('.');
        push_key(&mut path, key);
        out.insert(key.clone(), value_to_json(value, &path)?);
    }
    Ok(serde_json::Value::Object(out))
}

fn value_to_json(value: &toml::Value, field: &str) -> Result<serde_json::Value, (String, String)> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(n) => J::from(*n),
        toml::Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(J::Number)
            .ok_or_else(|| (field.to_string(), format!("{x} cannot be represented in JSON")))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => table_to_json(t, field)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver() {
        for ok in ["0.1.0", "1.2.3-alpha.1", "10.0.0+build.5", "1.0.0-rc-1+x"] {
            assert!(valid_semver(ok), "{ok}");
        }
        for bad in ["1.0", "01.0.0", "1.0.0-", "1.0.0+", "v1.0.0", "1.0.0-a..b", ""] {
            assert!(!valid_semver(bad), "{bad}");
        }
    }
}
