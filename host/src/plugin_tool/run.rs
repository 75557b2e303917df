//! `rapport plugin run FILE.wasm --input FIXTURE.json`: one call of a
//! plugin against fixture data (the author's inner loop, like a function
//! runner), with the server's runtime and limits.
//!
//! Fixture format (every field but `call` optional):
//! ```json
//! {
//!   "tenant": "acme",
//!   "data": { "tenants": { "acme": { "customers": [...], "products": [...] } } },
//!   "config": { "bonus": 10 },
//!   "call": { "export": "score", "input": { "customer": {...}, "interactions": [...],
//!                                           "truncated": false, "now": 1750000000000 } }
//! }
//! ```
//! `data` is what the host capabilities serve (`runtime::fixture`), per
//! tenant, so a fixture can also prove that another tenant's records stay
//! invisible. `input` is the export's argument in the contract's JSON form
//! (snake_case fields; see `parse_input` for the exports taking several
//! arguments). Where a customer-history is expected, `{"customer_id": "c1",
//! "now": ...}` builds it from `data` instead (`expand_histories`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rapport::runtime::contract::channel::{InboundRequest, Message};
use rapport::runtime::contract::cross_selling::RecommendRequest;
use rapport::runtime::contract::inputs::{CustomerHistory, PurchaseSummary};
use rapport::runtime::contract::rewards::InteractionContext;
use rapport::runtime::contract::types::{LineItem, LoyaltyAccount, Reward, Tier};
use rapport::runtime::fixture::{FixtureData, FixtureServices};
use rapport::runtime::history::FullHistory;
use rapport::runtime::{
    CallContext, CallError, CallReport, Capability, Limits, LogLine, PluginDefinition, PluginKind, Runtime,
    RuntimeConfig,
};
use rapport::store::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::RunArgs;

/// The tenant a fixture runs as when it names none.
const DEFAULT_TENANT: &str = "acme";

/// Bad command line or fixture: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: invalid fixture at line {line}, column {column}: {message}")]
    Fixture {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunFixture {
    tenant: Option<String>,
    #[serde(default)]
    data: FixtureData,
    /// The tenant's plugin configuration (a JSON object); default `{}`, or
    /// the manifest's `[[tenant.plugin]] config` with `--manifest`.
    config: Option<Value>,
    call: CallSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallSpec {
    export: String,
    #[serde(default)]
    input: Value,
}

/// The exports a fixture can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Export {
    Score,
    ScoreBatch,
    /// `fit` of a scoring rule (`population`, `now`) or of a cross-sell
    /// plugin (`baskets`), told apart by the kind.
    Fit,
    Recommend,
    OnInteraction,
    Redeemable,
    Deliver,
    ParseInbound,
}

impl Export {
    const NAMES: &'static str =
        "score, score-batch, fit, recommend, on-interaction, redeemable, deliver, parse-inbound";

    fn parse(s: &str) -> Option<Export> {
        Some(match s {
            "score" => Export::Score,
            "score-batch" => Export::ScoreBatch,
            "fit" => Export::Fit,
            "recommend" => Export::Recommend,
            "on-interaction" => Export::OnInteraction,
            "redeemable" => Export::Redeemable,
            "deliver" => Export::Deliver,
            "parse-inbound" => Export::ParseInbound,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Export::Score => "score",
            Export::ScoreBatch => "score-batch",
            Export::Fit => "fit",
            Export::Recommend => "recommend",
            Export::OnInteraction => "on-interaction",
            Export::Redeemable => "redeemable",
            Export::Deliver => "deliver",
            Export::ParseInbound => "parse-inbound",
        }
    }

    /// The kinds exporting this function.
    fn kinds(self) -> &'static [PluginKind] {
        match self {
            Export::Score | Export::ScoreBatch => &[PluginKind::ScoringRule],
            Export::Fit => &[PluginKind::ScoringRule, PluginKind::CrossSell],
            Export::Recommend => &[PluginKind::CrossSell],
            Export::OnInteraction | Export::Redeemable => &[PluginKind::RewardScheme],
            Export::Deliver | Export::ParseInbound => &[PluginKind::ChannelConnector],
        }
    }

    /// The kind when no flag or manifest says: `fit` taking `baskets` is a
    /// cross-sell fit, any other `fit` a scoring fit.
    fn infer_kind(self, input: &Value) -> PluginKind {
        match self {
            Export::Fit if input.get("baskets").is_some() => PluginKind::CrossSell,
            other => other.kinds()[0],
        }
    }
}

/// `fit` of a scoring rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoringFitInput {
    population: Vec<PurchaseSummary>,
    now: i64,
}

/// `recommend`'s request with the history written in full (interactions
/// as records, as people write them); the tool compacts it as the server
/// does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullRecommendRequest {
    history: FullHistory,
    #[serde(default)]
    basket: Option<Vec<LineItem>>,
    limit: u32,
}

/// `fit` of a cross-sell plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasketsFitInput {
    baskets: Vec<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemableInput {
    account: LoyaltyAccount,
    #[serde(default)]
    tiers: Vec<Tier>,
    #[serde(default)]
    rewards: Vec<Reward>,
}

/// `parse-inbound`'s request, with the body as text (the common case) or
/// as an array of bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundInput {
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: InboundBody,
    #[serde(default)]
    received_at: i64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InboundBody {
    Text(String),
    Bytes(Vec<u8>),
}

impl Default for InboundBody {
    fn default() -> Self {
        InboundBody::Text(String::new())
    }
}

fn default_method() -> String {
    "POST".into()
}

/// A call's argument(s), typed.
enum CallInput {
    Score(CustomerHistory),
    ScoreBatch(Vec<CustomerHistory>),
    ScoringFit(ScoringFitInput),
    BasketsFit(BasketsFitInput),
    Recommend(RecommendRequest),
    OnInteraction(InteractionContext),
    Redeemable(RedeemableInput),
    Deliver(Message),
    ParseInbound(InboundRequest),
}

fn parse_input(export: Export, kind: PluginKind, input: Value) -> Result<CallInput, UsageError> {
    fn typed<T: serde::de::DeserializeOwned>(export: Export, what: &str, input: Value) -> Result<T, UsageError> {
        serde_json::from_value(input)
            .map_err(|e| UsageError::Invalid(format!("call.input for `{}` must be {what}: {e}", export.name())))
    }
    Ok(match export {
        Export::Score => CallInput::Score(typed::<FullHistory>(export, "a customer-history", input)?.compact()),
        Export::ScoreBatch => CallInput::ScoreBatch(
            typed::<Vec<FullHistory>>(export, "a list of customer-history", input)?
                .iter()
                .map(FullHistory::compact)
                .collect(),
        ),
        Export::Fit if kind == PluginKind::CrossSell => {
            CallInput::BasketsFit(typed(export, "{\"baskets\": [[sku, ...], ...]}", input)?)
        }
        Export::Fit => CallInput::ScoringFit(typed(
            export,
            "{\"population\": [purchase-summary, ...], \"now\": timestamp}",
            input,
        )?),
        Export::Recommend => {
            let r: FullRecommendRequest = typed(export, "a recommend-request", input)?;
            CallInput::Recommend(RecommendRequest {
                history: r.history.compact(),
                basket: r.basket,
                limit: r.limit,
            })
        }
        Export::OnInteraction => CallInput::OnInteraction(typed(export, "an interaction-context", input)?),
        Export::Redeemable => CallInput::Redeemable(typed(
            export,
            "{\"account\": loyalty-account, \"tiers\": [...], \"rewards\": [...]}",
            input,
        )?),
        Export::Deliver => CallInput::Deliver(typed(export, "a message", input)?),
        Export::ParseInbound => {
            let i: InboundInput = typed(export, "an inbound-request", input)?;
            CallInput::ParseInbound(InboundRequest {
                method: i.method,
                path: i.path,
                headers: i.headers,
                body: match i.body {
                    InboundBody::Text(s) => s.into_bytes(),
                    InboundBody::Bytes(b) => b,
                },
                received_at: i.received_at,
            })
        }
    })
}

/// Where the export takes a customer-history, a fixture may write
/// `{"customer_id": "a-1", "now": 1750000000000}` instead: the history is
/// then built from the tenant's `data` as the server builds it (the
/// customer, their interactions oldest first; `now` defaults to the
/// current time). Keeps fixtures short and the data in one place.
fn expand_histories(export: Export, input: &mut Value, data: &FixtureData, tenant: &str) -> Result<(), UsageError> {
    match export {
        Export::Score => expand_history(input, data, tenant),
        Export::ScoreBatch => match input.as_array_mut() {
            Some(items) => items.iter_mut().try_for_each(|item| expand_history(item, data, tenant)),
            None => Ok(()),
        },
        Export::Recommend => match input.get_mut("history") {
            Some(history) => expand_history(history, data, tenant),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn expand_history(value: &mut Value, data: &FixtureData, tenant: &str) -> Result<(), UsageError> {
    let Some(object) = value.as_object() else {
        return Ok(());
    };
    if object.contains_key("customer") {
        return Ok(());
    }
    let Some(id) = object.get("customer_id").and_then(Value::as_str) else {
        return Ok(());
    };
    let unknown = || {
        UsageError::Invalid(format!(
            "customer_id `{id}`: tenant `{tenant}` has no such customer in the fixture's data"
        ))
    };
    let records = data.tenants.get(tenant).ok_or_else(unknown)?;
    let customer = records.customers.iter().find(|c| c.id == id).ok_or_else(unknown)?;
    let mut interactions: Vec<_> = records.interactions.iter().filter(|i| i.customer_id == id).collect();
    interactions.sort_by(|a, b| a.occurred_at.cmp(&b.occurred_at).then_with(|| a.id.cmp(&b.id)));
    let now = match object.get("now") {
        Some(now) => now
            .as_i64()
            .ok_or_else(|| UsageError::Invalid(format!("customer_id `{id}`: `now` must be epoch milliseconds")))?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    };
    let expanded = json!({
        "customer": customer,
        "interactions": interactions,
        "truncated": false,
        "now": now,
    });
    *value = expanded;
    Ok(())
}

/// Everything resolved from the command line, the fixture and the manifest.
struct Prepared {
    definition: PluginDefinition,
    tenant: String,
    config_json: String,
    data: FixtureData,
    export: Export,
    input: CallInput,
}

/// The machine-readable report (`--json`); the human one prints the same.
#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    plugin: PluginInfo,
    tenant: String,
    export: &'static str,
    result: Option<Value>,
    /// The result as the plugin returned it, fields in contract order (a
    /// `Value` sorts object keys), for the human report.
    #[serde(skip)]
    result_text: Option<String>,
    error: Option<ErrorInfo>,
    logs: Vec<LogLine>,
    logs_dropped: u32,
    duration_ms: f64,
    fuel_used: Option<u64>,
}

#[derive(Debug, Serialize)]
struct PluginInfo {
    file: String,
    sha256: String,
    kind: PluginKind,
    capabilities: Vec<Capability>,
    limits: Limits,
}

#[derive(Debug, Serialize)]
struct ErrorInfo {
    /// `plugin_timeout`, `plugin_error`, ... as the server reports them.
    code: String,
    message: String,
    /// The limit the call ran into: timeout, fuel, memory, stack, output_size.
    limit: Option<&'static str>,
}

pub async fn main(args: RunArgs) -> ExitCode {
    let prepared = match prepare(&args) {
        Ok(p) => p,
        Err(err) => return usage_failure(&args, &err),
    };
    let report = execute(&args, prepared).await;
    match report {
        Ok(report) => {
            print_report(&args, &report);
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => usage_failure(&args, &err),
    }
}

fn usage_failure(args: &RunArgs, err: &UsageError) -> ExitCode {
    if args.json {
        let body = json!({"ok": false, "error": {"code": "usage", "message": err.to_string(), "limit": null}});
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    }
    eprintln!("error: {err}");
    ExitCode::from(2)
}

fn read(path: &Path) -> Result<Vec<u8>, UsageError> {
    std::fs::read(path).map_err(|e| UsageError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn prepare(args: &RunArgs) -> Result<Prepared, UsageError> {
    let fixture_bytes = read(&args.input)?;
    let fixture: RunFixture = serde_json::from_slice(&fixture_bytes).map_err(|e| UsageError::Fixture {
        path: args.input.display().to_string(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let export = Export::parse(&fixture.call.export).ok_or_else(|| {
        UsageError::Invalid(format!(
            "{}: unknown call.export `{}` (expected one of {})",
            args.input.display(),
            fixture.call.export,
            Export::NAMES
        ))
    })?;
    let tenant = fixture.tenant.clone().unwrap_or_else(|| DEFAULT_TENANT.to_owned());
    if tenant.trim().is_empty() {
        return Err(UsageError::Invalid(format!(
            "{}: tenant must not be empty",
            args.input.display()
        )));
    }
    let wasm = read(&args.wasm)?;
    let sha256 = hex::encode(Sha256::digest(&wasm));

    let mut limits = manifest_default_limits();
    let mut manifest_config = None;
    let (id, kind, capabilities, allowed_hosts) = match (&args.manifest, &args.plugin) {
        (Some(path), Some(id)) => {
            let manifest = rapport::manifest::Manifest::load(path).map_err(|e| {
                UsageError::Invalid(format!(
                    "the manifest is not valid (see `rapport manifest check`):\n{e}"
                ))
            })?;
            let spec = manifest.plugin(id).ok_or_else(|| {
                UsageError::Invalid(format!(
                    "{}: no plugin `{id}` (declared: {})",
                    path.display(),
                    manifest
                        .plugins
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            limits = rapport::plugins::runtime_limits(&spec.limits);
            manifest_config = manifest
                .tenant_plugin(&tenant, id)
                .map(|(_, entry)| entry.config.clone());
            (
                spec.id.clone(),
                spec.kind,
                spec.capabilities.clone(),
                spec.allowed_hosts.clone(),
            )
        }
        _ => {
            let kind = args.kind.unwrap_or_else(|| export.infer_kind(&fixture.call.input));
            let capabilities = if args.capabilities.is_empty() {
                // Everything the kind may import. outbound-http/-smtp reach
                // only `--allow-host` hosts: none unless asked.
                Capability::ALL
                    .into_iter()
                    .filter(|c| !c.connector_only() || kind == PluginKind::ChannelConnector)
                    .collect()
            } else {
                args.capabilities.iter().copied().collect()
            };
            let id = args
                .wasm
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_else(|| "plugin".into());
            (id, kind, capabilities, args.allowed_hosts.clone())
        }
    };
    if !export.kinds().contains(&kind) {
        return Err(UsageError::Invalid(format!(
            "a {kind} plugin does not export `{}` (the fixture calls it)",
            export.name()
        )));
    }
    if let Some(ms) = args.timeout_ms {
        limits.timeout_ms = ms;
    }
    if let Some(fuel) = args.fuel {
        limits.fuel = Some(fuel);
    }
    if let Some(mb) = args.memory_mb {
        limits.memory_mb = mb;
    }
    if limits.timeout_ms == 0 || limits.memory_mb == 0 {
        return Err(UsageError::Invalid(
            "--timeout-ms and --memory-mb must be positive".into(),
        ));
    }
    let config = fixture.config.or(manifest_config).unwrap_or_else(|| json!({}));
    let mut call_input = fixture.call.input;
    expand_histories(export, &mut call_input, &fixture.data, &tenant)?;
    let input = parse_input(export, kind, call_input)?;
    Ok(Prepared {
        definition: PluginDefinition {
            id,
            kind,
            contract: rapport::runtime::contract::CONTRACT.to_owned(),
            wasm,
            sha256,
            capabilities,
            allowed_hosts,
            limits,
        },
        tenant,
        config_json: config.to_string(),
        data: fixture.data,
        export,
        input,
    })
}

/// The manifest's defaults (tight on purpose), as runtime limits, so a
/// plugin that passes here passes in a default manifest entry.
fn manifest_default_limits() -> Limits {
    rapport::plugins::runtime_limits(&rapport::manifest::Limits::default())
}

async fn execute(args: &RunArgs, p: Prepared) -> Result<Report, UsageError> {
    let defaults = RuntimeConfig::default();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: cache_dir(args),
        // One call at a time: a small pool, with slots as large as asked.
        max_instances: 4,
        max_memory_mb: defaults.max_memory_mb.max(p.definition.limits.memory_mb),
        ..defaults
    })
    .map_err(|e| UsageError::Invalid(format!("cannot start the plugin runtime: {e}")))?;
    let info = PluginInfo {
        file: args.wasm.display().to_string(),
        sha256: p.definition.sha256.clone(),
        kind: p.definition.kind,
        capabilities: p.definition.capabilities.iter().copied().collect(),
        limits: p.definition.limits.clone(),
    };
    let mut report = Report {
        ok: false,
        plugin: info,
        tenant: p.tenant.clone(),
        export: p.export.name(),
        result: None,
        result_text: None,
        error: None,
        logs: Vec::new(),
        logs_dropped: 0,
        duration_ms: 0.0,
        fuel_used: None,
    };
    let plugin = match runtime.load(p.definition) {
        Ok(plugin) => plugin,
        Err(e) => {
            // The component itself is at fault (not a component, an
            // ungranted import, a missing export): a plugin failure.
            report.error = Some(ErrorInfo {
                code: "plugin_load_failed".into(),
                message: e.to_string(),
                limit: None,
            });
            return Ok(report);
        }
    };
    let ctx = CallContext {
        tenant: TenantId::from_local_fixture(p.tenant),
        config_json: p.config_json,
        services: Arc::new(FixtureServices::new(p.data)),
    };
    let (result, call_report): (Result<Rendered, CallError>, CallReport) = match p.input {
        CallInput::Score(h) => to_value(plugin.score(ctx, &h).await),
        CallInput::ScoreBatch(hs) => {
            let (result, call_report) = plugin.score_batch(ctx, &hs).await;
            let result = result.map(|items| {
                let failed = items.iter().filter(|r| r.is_err()).count();
                let values = items
                    .into_iter()
                    .map(|r| match r {
                        Ok(score) => json!({ "ok": score }),
                        Err(e) => json!({ "error": error_info(&e) }),
                    })
                    .collect::<Vec<_>>();
                (Value::Array(values), failed)
            });
            match result {
                Ok((values, failed)) if failed > 0 => {
                    report.result = Some(values);
                    report.error = Some(ErrorInfo {
                        code: "plugin_error".into(),
                        message: format!("{failed} of {} items failed", hs.len()),
                        limit: None,
                    });
                    fill(&mut report, &call_report);
                    return Ok(report);
                }
                Ok((values, _)) => (Ok(Rendered::from(values)), call_report),
                Err(e) => (Err(e), call_report),
            }
        }
        CallInput::ScoringFit(f) => json_text(plugin.fit(ctx, &f.population, f.now).await),
        CallInput::BasketsFit(f) => json_text(plugin.fit_baskets(ctx, &f.baskets).await),
        CallInput::Recommend(r) => to_value(plugin.recommend(ctx, &r).await),
        CallInput::OnInteraction(c) => to_value(plugin.on_interaction(ctx, &c).await),
        CallInput::Redeemable(r) => to_value(plugin.redeemable(ctx, &r.account, &r.tiers, &r.rewards).await),
        CallInput::Deliver(m) => to_value(plugin.deliver(ctx, &m).await),
        CallInput::ParseInbound(r) => to_value(plugin.parse_inbound(ctx, &r).await),
    };
    fill(&mut report, &call_report);
    match result {
        Ok(rendered) => {
            report.ok = true;
            report.result = Some(rendered.value);
            report.result_text = rendered.text;
        }
        Err(e) => report.error = Some(error_info(&e)),
    }
    Ok(report)
}

/// Compiled components are cached per digest, so re-running an unchanged
/// component skips Cranelift (seconds for a large one, e.g. Python). The
/// cache holds native code: it lives in the user's own cache directory,
/// never a shared temporary one.
fn cache_dir(args: &RunArgs) -> Option<std::path::PathBuf> {
    if args.no_cache {
        return None;
    }
    if let Some(dir) = &args.cache_dir {
        return Some(dir.clone());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("rapport").join("compiled-plugins"))
}

fn fill(report: &mut Report, call: &CallReport) {
    report.logs = call.logs.clone();
    report.logs_dropped = call.logs_dropped;
    report.duration_ms = duration_ms(call.duration);
    report.fuel_used = call.fuel_used;
}

fn duration_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn to_value<T: Serialize>(
    (result, report): (Result<T, CallError>, CallReport),
) -> (Result<Rendered, CallError>, CallReport) {
    let value = result.and_then(|v| {
        let represent = |e: serde_json::Error| CallError::InvalidOutput(format!("result is not representable: {e}"));
        Ok(Rendered {
            text: Some(serde_json::to_string_pretty(&v).map_err(represent)?),
            value: serde_json::to_value(v).map_err(represent)?,
        })
    });
    (value, report)
}

/// A result as JSON, plus its text in field order when that differs.
struct Rendered {
    value: Value,
    text: Option<String>,
}

impl From<Value> for Rendered {
    fn from(value: Value) -> Self {
        Rendered { value, text: None }
    }
}

/// A `json` result (fit summaries) shown as JSON, not as a quoted string;
/// the runtime has already checked that it parses.
fn json_text((result, report): (Result<String, CallError>, CallReport)) -> (Result<Rendered, CallError>, CallReport) {
    let value = result.map(|text| Rendered::from(serde_json::from_str(&text).unwrap_or(Value::String(text))));
    (value, report)
}

fn error_info(e: &CallError) -> ErrorInfo {
    let (code, limit) = match e {
        CallError::Timeout { .. } => ("plugin_timeout".to_owned(), Some("timeout")),
        CallError::OutOfFuel => ("plugin_out_of_fuel".to_owned(), Some("fuel")),
        CallError::MemoryLimit => ("plugin_memory_limit".to_owned(), Some("memory")),
        CallError::StackOverflow => ("plugin_stack_overflow".to_owned(), Some("stack")),
        CallError::OutputTooLarge { .. } => ("plugin_output_too_large".to_owned(), Some("output_size")),
        CallError::Guest(kind, _) => (format!("plugin_error.{kind}"), None),
        other => (format!("plugin_{}", other.cause()), None),
    };
    ErrorInfo {
        code,
        message: e.to_string(),
        limit,
    }
}

fn print_report(args: &RunArgs, report: &Report) {
    if args.json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot serialise the report: {e}"),
        }
        return;
    }
    let plugin = &report.plugin;
    println!(
        "plugin: {} ({}, sha256 {})",
        plugin.file,
        plugin.kind,
        plugin.sha256.get(..12).unwrap_or(&plugin.sha256)
    );
    println!("call:   {} for tenant {}", report.export, report.tenant);
    if let Some(result) = &report.result {
        println!("result:");
        match &report.result_text {
            Some(text) => println!("{text}"),
            None => println!("{}", serde_json::to_string_pretty(result).unwrap_or_default()),
        }
    }
    if let Some(error) = &report.error {
        println!("error:  {}: {}", error.code, error.message);
        if let Some(limit) = error.limit {
            println!("limit hit: {}", limit_text(limit, &plugin.limits));
        }
    }
    if report.logs.is_empty() {
        println!("logs:   none");
    } else {
        println!("logs:");
        for line in &report.logs {
            let level = serde_json::to_value(line.level)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let fields = line.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>();
            // Fields first: captured stdout/stderr spans several lines,
            // indented under its header.
            let message = line.message.trim_end().replace('\n', "\n      ");
            println!("  [{level}{fields}] {message}");
        }
    }
    if report.logs_dropped > 0 {
        println!(
            "        {} more line(s) dropped (max_log_bytes {})",
            report.logs_dropped, plugin.limits.max_log_bytes
        );
    }
    let fuel = match report.fuel_used {
        Some(f) => format!("{f}"),
        None => "not metered".into(),
    };
    println!(
        "time:   {:.3} ms (limit {} ms)",
        report.duration_ms, plugin.limits.timeout_ms
    );
    match plugin.limits.fuel {
        Some(limit) => println!("fuel:   {fuel} (limit {limit})"),
        None => println!("fuel:   {fuel}"),
    }
}

fn limit_text(limit: &str, limits: &Limits) -> String {
    match limit {
        "timeout" => format!("timeout ({} ms, --timeout-ms)", limits.timeout_ms),
        "fuel" => format!(
            "fuel ({}, --fuel)",
            limits.fuel.map(|f| f.to_string()).unwrap_or_else(|| "unlimited".into())
        ),
        "memory" => format!("memory ({} MiB, --memory-mb)", limits.memory_mb),
        "stack" => format!("stack ({} KiB)", limits.stack_kb),
        "output_size" => format!("output size ({} bytes)", limits.max_output_bytes),
        other => other.to_owned(),
    }
}
