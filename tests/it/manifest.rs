//! Manifest tests: a good manifest loads; every class of error is reported
//! with its exact file:line:column and field path, all together; digests
//! are verified; `rapport manifest check` exit codes.

use std::path::{Path, PathBuf};

use rapport::manifest::{Capability, DeliveryPolicy, Limits, Manifest, ManifestError, PluginKind, sha256_file};
use serde_json::json;

/// A temp dir holding two artifacts, `a.wasm` and `b.wasm` (any bytes: the
/// digest check does not need a real component).
struct Fixture {
    dir: tempfile::TempDir,
    sha_a: String,
    sha_b: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"\0asm component a").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.wasm"), b"\0asm component b").unwrap();
        let sha_a = sha256_file(&dir.path().join("a.wasm")).unwrap();
        let sha_b = sha256_file(&dir.path().join("sub/b.wasm")).unwrap();
        Fixture { dir, sha_a, sha_b }
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("plugins.toml")
    }

    /// Writes the manifest (with `{SHA_A}`/`{SHA_B}` substituted) and loads it.
    fn load(&self, text: &str) -> Result<Manifest, ManifestError> {
        let text = text.replace("{SHA_A}", &self.sha_a).replace("{SHA_B}", &self.sha_b);
        std::fs::write(self.manifest_path(), text).unwrap();
        Manifest::load(&self.manifest_path())
    }

    /// The issues of a manifest that must fail, as `line:col: field: message`.
    fn issues(&self, text: &str) -> Vec<String> {
        let err = self.load(text).expect_err("manifest should be invalid");
        let prefix = format!("{}:", self.manifest_path().display());
        let display = err.to_string();
        let lines: Vec<String> = display
            .lines()
            .map(|l| {
                l.strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("issue without file: {l}"))
                    .to_string()
            })
            .collect();
        assert_eq!(lines.len(), err.issues().len(), "{display}");
        lines
    }
}

const GOOD: &str = r#"
[[plugin]]
id = "rfm"
kind = "scoring-rule"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
capabilities = ["customers", "interactions", "kv", "log", "config"]
[plugin.limits]
timeout_ms = 150
fuel = 50_000_000
kv_max_bytes = 4096

[[plugin]]
id = "hook"
kind = "channel-connector"
version = "1.2.3-beta.1"
contract = "rapport:crm@0.1.0"
artifact = "sub/b.wasm"
sha256 = "{SHA_B}"
capabilities = ["log", "outbound-http"]
allowed_hosts = ["hooks.example.com", "*.example.org:8443"]
channels = ["webhook", "email"]
[plugin.delivery]
max_attempts = 5
rate_per_second = 20

[[tenant]]
id = "demo"
message_rate_per_second = 7
[[tenant.plugin]]
id = "rfm"
config = { window_days = 365, weights = [0.5, 0.3], nested = { on = true }, since = 2024-01-01 }
[[tenant.plugin]]
id = "hook"
enabled = false

[[tenant]]
id = "other"
"#;

#[test]
fn good_manifest_loads() {
    let fx = Fixture::new();
    let m = fx.load(GOOD).unwrap();
    assert_eq!(m.path, fx.manifest_path());
    assert_eq!(m.plugins.len(), 2);

    let rfm = m.plugin("rfm").unwrap();
    assert_eq!(rfm.kind, PluginKind::ScoringRule);
    assert_eq!(rfm.version, "0.1.0");
    assert_eq!(rfm.contract, "rapport:crm@0.1.0");
    assert_eq!(rfm.artifact, fx.dir.path().join("a.wasm"));
    assert!(rfm.artifact.is_absolute());
    assert_eq!(rfm.sha256, fx.sha_a);
    assert_eq!(
        rfm.capabilities.iter().copied().collect::<Vec<_>>(),
        [
            Capability::Customers,
            Capability::Interactions,
            Capability::Kv,
            Capability::Log,
            Capability::Config
        ]
    );
    assert!(rfm.allowed_hosts.is_empty());
    assert_eq!(
        rfm.limits,
        Limits {
            timeout_ms: 150,
            fuel: Some(50_000_000),
            kv_max_bytes: 4096,
            ..Limits::default()
        }
    );

    let hook = m.plugin("hook").unwrap();
    assert_eq!(hook.kind, PluginKind::ChannelConnector);
    assert_eq!(hook.artifact, fx.dir.path().join("sub/b.wasm"));
    assert!(hook.has(Capability::OutboundHttp));
    let hosts: Vec<String> = hook.allowed_hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["hooks.example.com", "*.example.org:8443"]);
    assert!(hook.allowed_hosts[1].matches("api.example.org", 8443, &[80, 443]));
    assert!(!hook.allowed_hosts[0].matches("evil.com", 443, &[80, 443]));
    assert_eq!(hook.limits, Limits::default());
    assert_eq!(hook.channels, ["webhook", "email"]);
    assert_eq!(
        hook.delivery,
        DeliveryPolicy {
            max_attempts: 5,
            rate_per_second: Some(20),
            ..DeliveryPolicy::default()
        }
    );
    assert!(rfm.channels.is_empty());
    assert_eq!(m.tenant_message_rate("demo"), Some(7));
    assert_eq!(m.tenant_message_rate("other"), None);

    let demo = m.tenant_plugins("demo");
    assert_eq!(demo.len(), 2);
    assert_eq!((demo[0].plugin.as_str(), demo[0].enabled), ("rfm", true));
    assert_eq!(
        demo[0].config,
        json!({ "window_days": 365, "weights": [0.5, 0.3], "nested": { "on": true }, "since": "2024-01-01" })
    );
    assert_eq!(
        (demo[1].plugin.as_str(), demo[1].enabled, &demo[1].config),
        ("hook", false, &json!({}))
    );
    assert!(m.tenant_plugins("other").is_empty());
    assert!(m.tenant_plugins("nobody").is_empty());
    assert!(m.tenant_plugin("demo", "hook").is_some());
    assert!(m.tenant_plugin("other", "hook").is_none());
    assert!(m.plugin("nope").is_none());
}

#[test]
fn semantic_errors_are_all_reported_with_line_column_and_field() {
    let fx = Fixture::new();
    let issues = fx.issues(
        r#"[[plugin]]
id = "rfm"
kind = "scoring-rules"
version = "0.1"
contract = "rapport:crm@9.9.9"
artifact = "a.wasm"
sha256 = "xyz"
capabilities = ["customers", "network", "outbound-http"]
allowed_hosts = ["https://x.com"]
[plugin.limits]
timeout_ms = 0
memory_mb = 100000

[[plugin]]
id = "rfm"
kind = "channel-connector"
version = "1.0.0"
contract = "rapport:crm@0.1.0"
artifact = "missing.wasm"
sha256 = "{SHA_A}"
capabilities = ["log", "log"]
allowed_hosts = ["a.com"]

[[plugin]]
id = "Bad Id"
kind = "channel-connector"
version = "1.0.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
capabilities = ["outbound-http"]
allowed_hosts = ["*.com", "ok.example.com:70000"]

[[tenant]]
id = "demo"
[[tenant.plugin]]
id = "nope"
[[tenant.plugin]]
id = "rfm"
[[tenant.plugin]]
id = "rfm"
[[tenant]]
id = "demo"
[[tenant]]
id = "-bad"
"#,
    );
    let expected = [
        "3:8: plugin[0].kind: unknown kind \"scoring-rules\"; expected one of scoring-rule, cross-sell, reward-scheme, channel-connector",
        "4:11: plugin[0].version: \"0.1\" is not a semantic version (MAJOR.MINOR.PATCH, e.g. 0.1.0)",
        "5:12: plugin[0].contract: unsupported contract \"rapport:crm@9.9.9\"; this host supports rapport:crm@0.1.0",
        "7:10: plugin[0].sha256: expected 64 hexadecimal characters (the artifact's SHA-256 digest)",
        "8:30: plugin[0].capabilities[1]: unknown capability \"network\"; expected one of customers, interactions, loyalty, catalog, kv, log, config, outbound-http, outbound-smtp",
        "9:18: plugin[0].allowed_hosts[0]: \"https://x.com\" is not a host pattern: write only `host[:port]`, without scheme or path",
        "11:14: plugin[0].limits.timeout_ms: 0 is out of range: expected 1 to 60000 (one minute)",
        "12:13: plugin[0].limits.memory_mb: 100000 is out of range: expected 1 to 4096",
        "15:6: plugin[1].id: duplicate plugin id \"rfm\" (first declared at line 2)",
        "16:8: plugin[1].channels: a channel-connector must list the channels it serves, e.g. channels = [\"email\"]",
        "19:12: plugin[1].artifact: cannot read artifact ",
        "21:24: plugin[1].capabilities[1]: capability \"log\" is listed twice",
        "22:17: plugin[1].allowed_hosts: allowed_hosts requires the outbound-http capability",
        "25:6: plugin[2].id: invalid plugin id \"Bad Id\": use 1-64 characters of a-z, 0-9, '-' and '_'",
        "26:8: plugin[2].channels: a channel-connector must list the channels it serves, e.g. channels = [\"email\"]",
        "32:18: plugin[2].allowed_hosts[0]: \"*.com\": a wildcard needs at least two labels after `*.` (e.g. `*.example.com`)",
        "32:27: plugin[2].allowed_hosts[1]: \"ok.example.com:70000\": port must be a number from 1 to 65535",
        "37:6: tenant[0].plugin[0].id: unknown plugin \"nope\": no [[plugin]] has this id",
        "41:6: tenant[0].plugin[2].id: plugin \"rfm\" is listed twice for tenant \"demo\" (first at line 39)",
        "43:6: tenant[1].id: duplicate tenant \"demo\" (first declared at line 35); list all its plugins in one [[tenant]]",
        "45:6: tenant[2].id: invalid tenant id \"-bad\": tenant ids are 1-64 characters of a-z, 0-9, '-' and '_'",
    ];
    for (got, want) in issues.iter().zip(expected.iter()) {
        assert!(
            got.starts_with(want),
            "\n got: {got}\nwant: {want}\nall:\n{}",
            issues.join("\n")
        );
    }
    assert_eq!(issues.len(), expected.len(), "all:\n{}", issues.join("\n"));
    // The missing artifact names its resolved absolute path.
    assert!(
        issues[10].contains(&fx.dir.path().join("missing.wasm").display().to_string()),
        "{}",
        issues[10]
    );
}

#[test]
fn channels_and_delivery_policy_are_checked() {
    let fx = Fixture::new();
    let issues = fx.issues(
        r#"[[plugin]]
id = "rfm"
kind = "scoring-rule"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
channels = ["email"]
[plugin.delivery]
max_attempts = 3

[[plugin]]
id = "hook"
kind = "channel-connector"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
channels = ["email", "SMS", "email"]
[plugin.delivery]
max_attempts = 0
backoff_initial_ms = 5000
backoff_max_ms = 1000
rate_per_second = 0

[[plugin]]
id = "empty"
kind = "channel-connector"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
channels = []
[plugin.delivery]
max_age_s = 3000000
backoff_initial_ms = 5000
backoff_max_ms = 1000

[[tenant]]
id = "demo"
message_rate_per_second = 0
"#,
    );
    assert_eq!(
        issues,
        [
            "8:12: plugin[0].channels: channels applies to channel-connector plugins only",
            "9:1: plugin[0].delivery: [plugin.delivery] applies to channel-connector plugins only",
            "19:22: plugin[1].channels[1]: invalid channel \"SMS\": use 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter",
            "19:29: plugin[1].channels[2]: channel \"email\" is listed twice",
            "21:16: plugin[1].delivery.max_attempts: 0 is out of range: expected 1 to 1000",
            "22:22: plugin[1].delivery.backoff_initial_ms: backoff_initial_ms (5000) must not exceed backoff_max_ms (1000)",
            "24:19: plugin[1].delivery.rate_per_second: 0 is out of range: expected 1 to 1000000",
            "33:12: plugin[2].channels: a channel-connector must serve at least one channel",
            "35:13: plugin[2].delivery.max_age_s: 3000000 is out of range: expected 1 to 2592000 (30 days)",
            "36:22: plugin[2].delivery.backoff_initial_ms: backoff_initial_ms (5000) must not exceed backoff_max_ms (1000)",
            "41:27: tenant[0].message_rate_per_second: 0 is out of range: expected 1 to 1000000",
        ]
    );
}

/// `[plugin.limits]` network keys: parsed into the spec (the rest keep
/// their defaults); out of range, or set on a plugin without the matching
/// capability, they are errors at the value.
#[test]
fn connector_network_limits_are_parsed_and_checked() {
    let fx = Fixture::new();
    let m = fx
        .load(
            r#"[[plugin]]
id = "hook"
kind = "channel-connector"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
capabilities = ["outbound-http"]
allowed_hosts = ["hooks.example.com"]
channels = ["webhook"]
[plugin.limits]
timeout_ms = 8000
http_timeout_ms = 3000
http_max_response_bytes = 4096

[[plugin]]
id = "mail"
kind = "channel-connector"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
capabilities = ["outbound-smtp"]
allowed_hosts = ["smtp.example.com"]
channels = ["email"]
[plugin.limits]
smtp_timeout_ms = 20000
smtp_max_message_bytes = 1_048_576
"#,
        )
        .unwrap();
    assert_eq!(
        m.plugin("hook").unwrap().limits,
        Limits {
            timeout_ms: 8000,
            http_timeout_ms: 3000,
            http_max_response_bytes: 4096,
            ..Limits::default()
        }
    );
    assert_eq!(
        m.plugin("mail").unwrap().limits,
        Limits {
            smtp_timeout_ms: 20_000,
            smtp_max_message_bytes: 1_048_576,
            ..Limits::default()
        }
    );
    let defaults = Limits::default();
    assert_eq!(
        (
            defaults.http_timeout_ms,
            defaults.http_max_response_bytes,
            defaults.smtp_timeout_ms,
            defaults.smtp_max_message_bytes
        ),
        (5_000, 1_048_576, 10_000, 10_485_760)
    );

    let issues = fx.issues(
        r#"[[plugin]]
id = "hook"
kind = "channel-connector"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
capabilities = ["outbound-http"]
allowed_hosts = ["hooks.example.com"]
channels = ["webhook"]
[plugin.limits]
http_timeout_ms = 0
http_max_response_bytes = 100_000_000
smtp_timeout_ms = 1000

[[plugin]]
id = "mail"
kind = "channel-connector"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
capabilities = ["outbound-smtp"]
allowed_hosts = ["smtp.example.com"]
channels = ["email"]
[plugin.limits]
smtp_timeout_ms = 60001
smtp_max_message_bytes = 512
http_max_response_bytes = 4096

[[plugin]]
id = "rfm"
kind = "scoring-rule"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
[plugin.limits]
http_timeout_ms = 1000
"#,
    );
    assert_eq!(
        issues,
        [
            "12:19: plugin[0].limits.http_timeout_ms: 0 is out of range: expected 1 to 60000 (one minute)",
            "13:27: plugin[0].limits.http_max_response_bytes: 100000000 is out of range: expected 1 to 67108864 (64 MiB)",
            "14:19: plugin[0].limits.smtp_timeout_ms: smtp_timeout_ms applies to plugins with the outbound-smtp capability only",
            "27:19: plugin[1].limits.smtp_timeout_ms: 60001 is out of range: expected 1 to 60000 (one minute)",
            "28:26: plugin[1].limits.smtp_max_message_bytes: 512 is out of range: expected 1024 to 67108864 (64 MiB)",
            "29:27: plugin[1].limits.http_max_response_bytes: http_max_response_bytes applies to plugins with the outbound-http capability only",
            "39:19: plugin[2].limits.http_timeout_ms: http_timeout_ms applies to plugins with the outbound-http capability only",
        ]
    );
}

#[test]
fn outbound_http_is_for_connectors_only() {
    let fx = Fixture::new();
    let issues = fx.issues(
        r#"[[plugin]]
id = "rfm"
kind = "scoring-rule"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
capabilities = ["customers", "outbound-http"]
allowed_hosts = ["hooks.example.com"]
"#,
    );
    assert_eq!(
        issues,
        ["8:30: plugin[0].capabilities[1]: outbound-http is only granted to channel-connector plugins"]
    );
}

#[test]
fn outbound_http_without_hosts_and_unknown_top_level_key() {
    let fx = Fixture::new();
    let issues = fx.issues(
        r#"[[plugin]]
id = "hook"
kind = "channel-connector"
version = "1.0.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
capabilities = ["log", "outbound-http"]

[settings]
x = 1
"#,
    );
    assert_eq!(
        issues,
        [
            "3:8: plugin[0].channels: a channel-connector must list the channels it serves, e.g. channels = [\"email\"]",
            "8:24: plugin[0].capabilities: outbound-http needs at least one allowed_hosts entry (it would reach nothing)",
            "10:2: settings: unknown top-level key `settings`; expected `plugin` or `tenant`",
        ]
    );
}

#[test]
fn type_and_unknown_field_errors_in_several_entries_are_reported_together() {
    let fx = Fixture::new();
    let issues = fx.issues(
        r#"[[plugin]]
id = "a"
kind = "scoring-rule"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"
sha256 = "{SHA_A}"
colour = "red"

[[plugin]]
id = "b"
kind = "cross-sell"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "sub/b.wasm"
sha256 = "{SHA_B}"
[plugin.limits]
timeout_ms = "fast"

[[plugin]]
id = "c"
kind = "cross-sell"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "a.wasm"

[[tenant]]
id = "demo"
[[tenant.plugin]]
id = "a"
enabled = "yes"
"#,
    );
    assert_eq!(issues.len(), 4, "{}", issues.join("\n"));
    assert!(
        issues[0].starts_with("8:1: plugin[0].colour: unknown field `colour`, expected one of"),
        "{}",
        issues[0]
    );
    assert!(
        issues[1].starts_with("18:14: plugin[1].limits.timeout_ms: invalid type: string \"fast\""),
        "{}",
        issues[1]
    );
    assert!(
        issues[2].starts_with("20:1: plugin[2]: missing field `sha256`"),
        "{}",
        issues[2]
    );
    assert!(
        issues[3].starts_with("31:11: tenant[0].plugin[0].enabled: invalid type: string \"yes\""),
        "{}",
        issues[3]
    );
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let fx = Fixture::new();
    let issues = fx.issues("[[plugin]]\nid = \"a\"\nkind = scoring-rule\n");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].starts_with("3:8: "), "{}", issues[0]);

    let issues = fx.issues("plugin = \"x\"\n");
    assert_eq!(issues, ["1:10: plugin: expected an array of tables ([[plugin]])"]);
}

#[test]
fn digest_mismatch_is_an_error_at_the_sha256_field() {
    let fx = Fixture::new();
    let text = GOOD.replacen("{SHA_B}", "{SHA_A}", 1);
    let issues = fx.issues(&text);
    let b = fx.dir.path().join("sub/b.wasm");
    assert_eq!(
        issues,
        [format!(
            "21:10: plugin[1].sha256: digest mismatch: {} has sha256 {}, the manifest says {}",
            b.display(),
            fx.sha_b,
            fx.sha_a
        )]
    );
    // The file changing after a good load is caught on the next load.
    fx.load(GOOD).unwrap();
    std::fs::write(fx.dir.path().join("a.wasm"), b"tampered").unwrap();
    let err = fx.load(GOOD).unwrap_err();
    assert_eq!(err.issues().len(), 1);
    assert_eq!(
        (err.issues()[0].line, err.issues()[0].field.as_str()),
        (8, "plugin[0].sha256")
    );
    assert!(err.issues()[0].message.starts_with("digest mismatch"), "{err}");
}

#[test]
fn unreadable_manifest_is_a_read_error() {
    let err = Manifest::load(Path::new("/nonexistent/plugins.toml")).unwrap_err();
    assert!(matches!(err, ManifestError::Read { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/plugins.toml: cannot read:"),
        "{err}"
    );
}

#[test]
fn manifest_check_command_exit_codes() {
    let fx = Fixture::new();
    fx.load(GOOD).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["manifest", "check"])
        .arg(fx.manifest_path())
        .output()
        .unwrap();
    // The file is valid, but `check` also loads each component as the
    // server would, and these artifacts are not WebAssembly.
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin rfm: plugin `rfm`: not a WebAssembly component"),
        "{stderr}"
    );
    assert!(stderr.contains("2 of 2 plugins cannot be loaded"), "{stderr}");

    let bad = GOOD
        .replace("\"log\", \"outbound-http\"", "\"log\", \"network\"")
        .replace("sub/b.wasm", "gone.wasm");
    fx.load(&bad).unwrap_err();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["manifest", "check"])
        .arg(fx.manifest_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = fx.manifest_path().display().to_string();
    assert!(
        stderr.contains(&format!("{file}:20:12: plugin[1].artifact: cannot read artifact")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:22:24: plugin[1].capabilities[1]: unknown capability \"network\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:23:17: plugin[1].allowed_hosts: allowed_hosts requires"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["manifest", "check", "/nonexistent/plugins.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn server_config_resolves_the_manifest_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rapport.toml");
    std::fs::write(
        &path,
        "[plugins]\nmanifest = \"plugins.toml\"\ncache_dir = \"/var/cache/rapport\"\n",
    )
    .unwrap();
    let config = rapport::config::Config::load(&path).unwrap();
    assert_eq!(config.plugins.manifest, Some(dir.path().join("plugins.toml")));
    assert_eq!(config.plugins.cache_dir, Some(PathBuf::from("/var/cache/rapport")));
    std::fs::write(&path, "[plugins]\nmanifests = \"x.toml\"\n").unwrap();
    let err = rapport::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2:1:", path.display())), "{err}");
    assert!(rapport::config::Config::default().plugins.manifest.is_none());
}

/// `manifest check` with real components: a well-behaved one passes; one
/// importing a capability the manifest does not grant is refused, naming the
/// import.
#[test]
fn manifest_check_loads_real_components() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let wasm = |name: &str| {
        let path = target.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
        assert!(path.is_file(), "{} missing: run scripts/build-plugins", path.display());
        path
    };
    let dir = tempfile::tempdir().unwrap();
    let entry = |id: &str, path: &Path, caps: &str| {
        format!(
            "[[plugin]]\nid = {id:?}\nkind = \"scoring-rule\"\nversion = \"0.1.0\"\ncontract = \"rapport:crm@0.1.0\"\n\
             artifact = {:?}\nsha256 = {:?}\ncapabilities = [{caps}]\n\n",
            path.display().to_string(),
            sha256_file(path).unwrap(),
        )
    };
    let check = |text: String| {
        let manifest = dir.path().join("plugins.toml");
        std::fs::write(&manifest, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args(["manifest", "check"])
            .arg(&manifest)
            .output()
            .unwrap()
    };
    let out = check(entry("scorer", &wasm("test_scorer"), "\"log\", \"config\""));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok: 1 plugins, 0 tenants\n");

    let out = check(entry("sneaky", &wasm("hostile_ungranted"), "\"log\""));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "plugin sneaky: plugin `sneaky`: imports `rapport:crm/kv@0.1.0` but capability `kv` is not granted"
        ),
        "{stderr}"
    );
}
