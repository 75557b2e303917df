//! `rapport plugin run` and `rapport plugin new`, tested through the real
//! binary: exact results for a plugin of each kind against the fixtures in
//! `examples/fixtures/`, limits reported with exit code 1 (timeout, fuel, a
//! refused import), fixture and usage errors with exit code 2, manifest
//! mode, scaffolded crates that test, build and run, and the Python
//! example plugin (`plugins/examples/python-scorer`) through both the
//! runtime and `plugin run` when componentize-py is installed.
//!
//! Needs the test plugins built (`scripts/build-plugins`, same
//! `CARGO_TARGET_DIR`).

use crate::support::runtime;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rapport::runtime::contract::scoring::CustomerScore;
use rapport::runtime::fixture::FixtureServices;
use rapport::runtime::{Capability, Limits, LogLevel, LogLine, PluginDefinition, PluginKind, Runtime, RuntimeConfig};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("examples/fixtures").join(format!("{name}.json"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// Runs `rapport plugin ARGS...`; compiled code is not cached across tests.
fn rapport(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("plugin")
        .args(args)
        .output()
        .unwrap()
}

fn run_plugin(wasm: &Path, fixture: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        wasm.to_str().unwrap(),
        "--input",
        fixture.to_str().unwrap(),
        "--no-cache",
    ];
    args.extend_from_slice(extra);
    rapport(&args)
}

/// `--json` report of a run, with its exit code.
fn run_json(wasm: &Path, fixture: &Path, extra: &[&str]) -> (i32, Value) {
    let mut extra = extra.to_vec();
    extra.push("--json");
    let out = run_plugin(wasm, fixture, &extra);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_scores_with_the_test_scorer_and_prints_the_exact_result() {
    let wasm = runtime::plugin_wasm("test-scorer");
    let out = run_plugin(&wasm, &fixture("test-scorer"), &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let expected_result = r#"result:
{
  "value": 12.0,
  "label": "2",
  "segment": "buyer",
  "explanation": "2 purchase(s), spend 1750 minor units, bonus 10",
  "components": [
    [
      "purchases",
      2.0
    ],
    [
      "spend_minor",
      1750.0
    ]
  ]
}
logs:   none
time:   "#;
    assert!(text.contains(expected_result), "stdout:\n{text}");
    assert!(
        text.starts_with(&format!("plugin: {} (scoring-rule, sha256 ", wasm.display())),
        "{text}"
    );
    assert!(text.contains("call:   score for tenant acme\n"), "{text}");
    assert!(text.contains(" ms (limit 200 ms)\nfuel:   "), "{text}");

    let (code, report) = run_json(&wasm, &fixture("test-scorer"), &[]);
    assert_eq!(code, 0);
    assert_eq!(report["ok"], json!(true));
    assert_eq!(
        report["result"],
        json!({
            "value": 12.0, "label": "2", "segment": "buyer",
            "explanation": "2 purchase(s), spend 1750 minor units, bonus 10",
            "components": [["purchases", 2.0], ["spend_minor", 1750.0]]
        })
    );
    assert_eq!(report["error"], Value::Null);
    assert_eq!(report["logs"], json!([]));
    assert_eq!(report["tenant"], json!("acme"));
    assert_eq!(report["export"], json!("score"));
    assert_eq!(report["plugin"]["kind"], json!("scoring-rule"));
    // Manifest defaults, and every non-network capability.
    assert_eq!(report["plugin"]["limits"]["timeout_ms"], json!(200));
    assert_eq!(report["plugin"]["limits"]["memory_mb"], json!(64));
    assert_eq!(
        report["plugin"]["capabilities"],
        json!(["customers", "interactions", "loyalty", "catalog", "kv", "log", "config"])
    );
    assert!(report["fuel_used"].as_u64().unwrap() > 0);
    assert!(report["duration_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn run_fit_shows_the_captured_log_line() {
    let wasm = runtime::plugin_wasm("test-scorer");
    let out = run_plugin(&wasm, &fixture("test-scorer-fit"), &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).contains("result:\n{}\nlogs:\n  [info population=3] fit over 3 customers\n"),
        "{}",
        stdout(&out)
    );
    let (_, report) = run_json(&wasm, &fixture("test-scorer-fit"), &[]);
    assert_eq!(report["result"], json!({}));
    assert_eq!(
        report["logs"],
        json!([{"level": "info", "message": "fit over 3 customers", "fields": [["population", "3"]]}])
    );
}

#[test]
fn run_each_kind_against_its_example_fixture() {
    // Cross-sell: the fixture's other tenant (globex, G-ONLY) stays invisible.
    let (code, report) = run_json(
        &runtime::plugin_wasm("test-cross-sell"),
        &fixture("test-cross-sell"),
        &[],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["result"],
        json!([
            {"sku": "A-TOP", "score": 99.0, "reason": "not bought yet; price 99 USD"},
            {"sku": "A-CHEAP", "score": 5.0, "reason": "not bought yet; price 5 USD"}
        ])
    );

    let (code, report) = run_json(&runtime::plugin_wasm("test-reward"), &fixture("test-reward"), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["result"],
        json!({
            "ledger": [{"Earn": {"points": 123, "reason": "1 point per unit", "expires_at": null}}],
            "tier_change": {"tier_id": "gold", "reason": "rolling spend >= 100000 minor"}
        })
    );

    let (code, report) = run_json(&runtime::plugin_wasm("test-connector"), &fixture("test-connector"), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["result"],
        json!([{
            "customer_external_id": "EXT-A1",
            "kind": "email_open",
            "occurred_at": 1_750_000_000_000_i64,
            "idempotency_key": "evt-42",
            "payload": r#"{"customer":"EXT-A1","event":"email_open","at":1750000000000,"id":"evt-42"}"#
        }])
    );
    // Connectors get outbound-http by default, reaching no host at all.
    assert_eq!(report["plugin"]["capabilities"][7], json!("outbound-http"));
}

#[test]
fn run_reports_a_timeout_with_exit_code_1() {
    let wasm = runtime::plugin_wasm("hostile-loop");
    let out = run_plugin(&wasm, &fixture("test-scorer"), &["--timeout-ms", "50"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "error:  plugin_timeout: plugin exceeded its 50 ms deadline\nlimit hit: timeout (50 ms, --timeout-ms)\n"
        ),
        "{text}"
    );
    assert!(!text.contains("result:"), "{text}");

    let (code, report) = run_json(&wasm, &fixture("test-scorer"), &[]);
    assert_eq!(code, 1);
    assert_eq!(report["ok"], json!(false));
    assert_eq!(
        report["error"],
        json!({"code": "plugin_timeout", "message": "plugin exceeded its 200 ms deadline", "limit": "timeout"})
    );
    assert_eq!(report["result"], Value::Null);
    let took = report["duration_ms"].as_f64().unwrap();
    assert!((200.0..2000.0).contains(&took), "took {took} ms");
}

#[test]
fn run_reports_memory_and_output_limits_with_exit_code_1() {
    let out = run_plugin(
        &runtime::plugin_wasm("hostile-memory-bomb"),
        &fixture("test-scorer"),
        &["--memory-mb", "16"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(
            "error:  plugin_memory_limit: plugin exceeded its memory limit\nlimit hit: memory (16 MiB, --memory-mb)\nlogs:\n  [warn stream=stdio] memory allocation of 1048576 bytes failed\n"
        ),
        "{text}"
    );

    let (code, report) = run_json(&runtime::plugin_wasm("hostile-oversized"), &fixture("test-scorer"), &[]);
    assert_eq!(code, 1);
    assert_eq!(report["error"]["code"], json!("plugin_output_too_large"));
    assert_eq!(report["error"]["limit"], json!("output_size"));
    assert_eq!(report["result"], Value::Null);
}

#[test]
fn run_reports_fuel_exhaustion_and_typed_plugin_errors() {
    let (code, report) = run_json(
        &runtime::plugin_wasm("hostile-loop"),
        &fixture("test-scorer"),
        &["--fuel", "1000000", "--timeout-ms", "5000"],
    );
    assert_eq!(code, 1);
    assert_eq!(
        report["error"],
        json!({"code": "plugin_out_of_fuel", "message": "plugin ran out of fuel", "limit": "fuel"})
    );
    assert_eq!(report["plugin"]["limits"]["fuel"], json!(1_000_000));

    // A config the plugin rejects: its typed error, exit code 1.
    let dir = tempfile::tempdir().unwrap();
    let mut bad_config: Value = serde_json::from_slice(&std::fs::read(fixture("test-scorer")).unwrap()).unwrap();
    bad_config["config"] = json!({"bonus": "x"});
    let path = dir.path().join("bad-config.json");
    std::fs::write(&path, bad_config.to_string()).unwrap();
    let (code, report) = run_json(&runtime::plugin_wasm("test-scorer"), &path, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        report["error"],
        json!({"code": "plugin_error.invalid_config", "message": "plugin error (invalid_config): \"bonus\" must be a number", "limit": null})
    );
}

#[test]
fn run_refuses_an_ungranted_import_with_exit_code_1() {
    let (code, report) = run_json(
        &runtime::plugin_wasm("test-scorer"),
        &fixture("test-scorer"),
        &["--capability", "log"],
    );
    assert_eq!(code, 1);
    assert_eq!(report["error"]["code"], json!("plugin_load_failed"));
    assert_eq!(
        report["error"]["message"],
        json!("plugin `test-scorer`: imports `rapport:crm/config@0.1.0` but capability `config` is not granted")
    );
}

#[test]
fn run_rejects_bad_fixtures_and_usage_with_exit_code_2() {
    let wasm = runtime::plugin_wasm("test-scorer");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };

    let broken = write("broken.json", "{\n  \"tenant\": \"acme\",\n  \"call\": {\n}");
    let out = run_plugin(&wasm, &broken, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: {}: invalid fixture at line 4, column 1: ",
            broken.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());

    let unknown_field = write(
        "field.json",
        r#"{"tenant": "acme", "cal": {"export": "score", "input": {}}}"#,
    );
    let out = run_plugin(&wasm, &unknown_field, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown field `cal`"), "{}", stderr(&out));

    let unknown_export = write("export.json", r#"{"call": {"export": "rank", "input": {}}}"#);
    let out = run_plugin(&wasm, &unknown_export, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}: unknown call.export `rank` (expected one of score, score-batch, fit, recommend, on-interaction, redeemable, deliver, parse-inbound)\n",
            unknown_export.display()
        )
    );

    let bad_input = write(
        "input.json",
        r#"{"call": {"export": "score", "input": {"customer": 1}}}"#,
    );
    let (code, report) = run_json(&wasm, &bad_input, &[]);
    assert_eq!(code, 2);
    assert_eq!(report["ok"], json!(false));
    assert_eq!(report["error"]["code"], json!("usage"));
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("call.input for `score` must be a customer-history: "),
        "{report}"
    );

    let wrong_kind = write("kind.json", r#"{"call": {"export": "recommend", "input": {}}}"#);
    let out = run_plugin(&wasm, &wrong_kind, &["--kind", "scoring-rule"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: a scoring-rule plugin does not export `recommend` (the fixture calls it)\n"
    );

    let out = run_plugin(&dir.path().join("missing.wasm"), &fixture("test-scorer"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: cannot read {}: ",
            dir.path().join("missing.wasm").display()
        )),
        "{}",
        stderr(&out)
    );

    let out = run_plugin(&wasm, &dir.path().join("none.json"), &[]);
    assert_eq!(out.status.code(), Some(2));

    // clap's own usage errors are exit code 2 as well.
    let out = rapport(&["run", wasm.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_takes_kind_capabilities_limits_and_config_from_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = runtime::plugin_wasm("test-scorer");
    let sha = runtime::sha256(&std::fs::read(&wasm).unwrap());
    let manifest = dir.path().join("plugins.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[[plugin]]
id = "scorer"
kind = "scoring-rule"
version = "0.1.0"
contract = "rapport:crm@0.1.0"
artifact = "{}"
sha256 = "{sha}"
capabilities = ["config", "log"]
[plugin.limits]
timeout_ms = 300
memory_mb = 32

[[tenant]]
id = "acme"
[[tenant.plugin]]
id = "scorer"
config = {{ bonus = 5 }}
"#,
            wasm.display()
        ),
    )
    .unwrap();
    // The fixture without a config: the tenant's manifest config applies.
    let mut without_config: Value = serde_json::from_slice(&std::fs::read(fixture("test-scorer")).unwrap()).unwrap();
    without_config.as_object_mut().unwrap().remove("config");
    let path = dir.path().join("fixture.json");
    std::fs::write(&path, without_config.to_string()).unwrap();

    let m = manifest.to_str().unwrap();
    let (code, report) = run_json(&wasm, &path, &["--manifest", m, "--plugin", "scorer"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["result"]["value"], json!(7.0));
    assert_eq!(report["plugin"]["capabilities"], json!(["log", "config"]));
    assert_eq!(report["plugin"]["limits"]["timeout_ms"], json!(300));
    assert_eq!(report["plugin"]["limits"]["memory_mb"], json!(32));

    // Flags still override the manifest's limits.
    let (_, report) = run_json(
        &wasm,
        &path,
        &["--manifest", m, "--plugin", "scorer", "--timeout-ms", "900"],
    );
    assert_eq!(report["plugin"]["limits"]["timeout_ms"], json!(900));

    let out = run_plugin(&wasm, &path, &["--manifest", m, "--plugin", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!("error: {}: no plugin `nope` (declared: scorer)\n", manifest.display())
    );
}

/// Expected `plugin run` results for each scaffolded crate's own fixture.
fn scaffold_expectations() -> Vec<(&'static str, Value)> {
    vec![
        (
            "scoring-rule",
            json!({
                "value": 1.0, "label": "1", "segment": "active",
                "explanation": "1 purchase(s) in the last 365 days (2 in all), spend 1250 minor units",
                "components": [["recent_purchases", 1.0], ["recent_spend_minor", 1250.0]]
            }),
        ),
        (
            "cross-sell",
            json!([
                {"sku": "POT", "score": 35.0, "reason": "not bought yet; Teapot at 35 USD"},
                {"sku": "MUG", "score": 12.0, "reason": "not bought yet; Mug at 12 USD"}
            ]),
        ),
        (
            "reward-scheme",
            json!({
                "ledger": [{"Earn": {"points": 58, "reason": "2 point(s) per unit spent", "expires_at": null}}],
                "tier_change": null
            }),
        ),
        (
            "channel-connector",
            json!([{
                "customer_external_id": "E1", "kind": "email_open", "occurred_at": 1_750_000_000_000_i64,
                "idempotency_key": "evt-1",
                "payload": r#"{"at":1750000000000,"customer":"E1","id":"evt-1","kind":"email_open"}"#
            }]),
        ),
    ]
}

fn cargo(dir: &Path, args: &[&str], target: &Path) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        // Nothing of this workspace's build settings leaks into the crate.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap()
}

#[test]
fn new_scaffolds_crates_that_test_build_and_run_for_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    // Separate from the workspace's target: the crates are standalone.
    let target = target_dir().join("scaffold-tests");
    for (kind, expected) in scaffold_expectations() {
        let name = format!("my-{kind}");
        let crate_dir = dir.path().join(&name);
        let out = rapport(&["new", kind, &name, "--dir", crate_dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stdout(&out).starts_with(&format!("created {kind} plugin `{name}` in {}\n", crate_dir.display())),
            "{}",
            stdout(&out)
        );
        for file in ["Cargo.toml", "README.md", ".gitignore", "src/lib.rs", "fixture.json"] {
            assert!(crate_dir.join(file).is_file(), "{kind}: {file} missing");
        }
        let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{name}\"")));
        assert!(manifest.contains("crate-type = [\"cdylib\", \"rlib\"]"));
        assert!(manifest.contains("\n[workspace]\n"), "standalone crate");
        // Outside the checkout: the SDK of the checkout this binary was built from.
        let sdk = std::fs::canonicalize(repo().join("plugins/sdk")).unwrap();
        assert!(
            manifest.contains(&format!("rapport-plugin-sdk = {{ path = \"{}\" }}", sdk.display())),
            "{manifest}"
        );

        let out = cargo(&crate_dir, &["test", "--quiet"], &target);
        assert!(out.status.success(), "{kind}: cargo test failed:\n{}", stderr(&out));
        assert!(stdout(&out).contains("test result: ok."), "{}", stdout(&out));

        let out = cargo(
            &crate_dir,
            &["build", "--quiet", "--release", "--target", "wasm32-wasip2"],
            &target,
        );
        assert!(out.status.success(), "{kind}: wasm build failed:\n{}", stderr(&out));
        let wasm = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let (code, report) = run_json(&wasm, &crate_dir.join("fixture.json"), &[]);
        assert_eq!(code, 0, "{kind}: {report}");
        assert_eq!(report["result"], expected, "{kind}");
    }

    // A second scaffold into the same folder is refused, not merged.
    let again = dir.path().join("my-scoring-rule");
    let out = rapport(&[
        "new",
        "scoring-rule",
        "my-scoring-rule",
        "--dir",
        again.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {} is not empty; choose another --dir or pass --force\n",
            again.display()
        )
    );
    let out = rapport(&["new", "scoring-rule", "Bad_Name"]);
    assert_eq!(out.status.code(), Some(2));
    let out = rapport(&["new", "lead-magnet", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Builds the Python example into `out`, or says why it cannot.
fn build_python_scorer(out: &Path) -> Result<(), String> {
    let available = Command::new("componentize-py")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        return Err("componentize-py is not installed (pip install componentize-py==0.25.1)".into());
    }
    let status = Command::new("bash")
        .arg(repo().join("plugins/examples/python-scorer/build.sh"))
        .arg(out)
        .output()
        .unwrap();
    if !status.status.success() {
        panic!("python-scorer build failed:\n{}\n{}", stdout(&status), stderr(&status));
    }
    Ok(())
}

#[tokio::test]
async fn python_scorer_runs_through_the_runtime_and_plugin_run() {
    let dir = tempfile::tempdir().unwrap();
    let wasm_path = dir.path().join("python_scorer.wasm");
    if let Err(reason) = build_python_scorer(&wasm_path) {
        if std::env::var_os("RAPPORT_REQUIRE_COMPONENTIZE_PY").is_some() {
            panic!("{reason}");
        }
        eprintln!("SKIPPED python_scorer test: {reason}");
        return;
    }
    let wasm = std::fs::read(&wasm_path).unwrap();
    // Compile once for both halves of the test (a Python component takes
    // seconds to compile).
    let cache = dir.path().join("cache");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = runtime
        .load(PluginDefinition {
            id: "python-scorer".into(),
            kind: PluginKind::ScoringRule,
            contract: "rapport:crm@0.1.0".into(),
            sha256: runtime::sha256(&wasm),
            wasm,
            capabilities: [Capability::Config, Capability::Log].into(),
            allowed_hosts: Vec::new(),
            limits: Limits {
                timeout_ms: 1_000,
                ..Limits::default()
            },
        })
        .unwrap();

    let services = std::sync::Arc::new(FixtureServices::default());
    let input = runtime::history(
        runtime::customer("a-1", "EXT-A1", "{}"),
        vec![
            runtime::purchase("i1", "a-1", 1_740_000_000_000, 1250, &["A-MID"]),
            runtime::purchase("i2", "a-1", 1_745_000_000_000, 4500, &["A-TOP"]),
        ],
    );
    let (result, report) = plugin
        .score(runtime::ctx("acme", r#"{"recent_days": 90}"#, &services), &input)
        .await;
    assert_eq!(
        result.unwrap(),
        CustomerScore {
            value: 45.0,
            label: Some("hot".into()),
            segment: Some("buyer".into()),
            explanation: "2 purchase(s), spend 5750 minor units, last 57 day(s) ago".into(),
            components: vec![
                ("purchases".into(), 2.0),
                ("spend_minor".into(), 5750.0),
                ("days_since_last".into(), 57.0),
            ],
        }
    );
    assert_eq!(
        report.logs,
        vec![LogLine {
            level: LogLevel::Info,
            message: "scored a-1".into(),
            fields: vec![("label".into(), "hot".into())],
        }]
    );
    // Outside the window: cold, no recency bonus.
    let (result, _) = plugin
        .score(runtime::ctx("acme", r#"{"recent_days": 30}"#, &services), &input)
        .await;
    let cold = result.unwrap();
    assert_eq!((cold.value, cold.label.as_deref()), (25.0, Some("cold")));
    // A bad config is the plugin's typed error.
    let (result, _) = plugin
        .score(runtime::ctx("acme", r#"{"recent_days": true}"#, &services), &input)
        .await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "plugin error (invalid_config): \"recent_days\" must be a positive integer"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["plugin", "run"])
        .arg(&wasm_path)
        .arg("--input")
        .arg(fixture("python-scorer"))
        .arg("--cache-dir")
        .arg(&cache)
        .args([
            "--capability",
            "config",
            "--capability",
            "log",
            "--timeout-ms",
            "1000",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["result"],
        json!({
            "value": 45.0, "label": "hot", "segment": "buyer",
            "explanation": "2 purchase(s), spend 5750 minor units, last 57 day(s) ago",
            "components": [["purchases", 2.0], ["spend_minor", 5750.0], ["days_since_last", 57.0]]
        })
    );
    assert_eq!(
        report["logs"],
        json!([{"level": "info", "message": "scored a-1", "fields": [["label", "hot"]]}])
    );
}

#[test]
fn run_score_batch_reports_each_item_and_fails_when_any_item_fails() {
    let dir = tempfile::tempdir().unwrap();
    let single: Value = serde_json::from_slice(&std::fs::read(fixture("test-scorer")).unwrap()).unwrap();
    let mut empty_history = single["call"]["input"].clone();
    empty_history["interactions"] = json!([]);
    let batch = |config: Value| {
        json!({
            "tenant": "acme",
            "config": config,
            "call": {"export": "score-batch", "input": [single["call"]["input"], empty_history]}
        })
    };
    let wasm = runtime::plugin_wasm("test-scorer");

    let path = dir.path().join("batch.json");
    std::fs::write(&path, batch(json!({"bonus": 1})).to_string()).unwrap();
    let (code, report) = run_json(&wasm, &path, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["result"][0]["ok"]["value"], json!(3.0));
    assert_eq!(
        report["result"][1],
        json!({"ok": {
            "value": 1.0, "label": "0", "segment": "prospect",
            "explanation": "0 purchase(s), spend 0 minor units, bonus 1",
            "components": [["purchases", 0.0], ["spend_minor", 0.0]]
        }})
    );

    std::fs::write(&path, batch(json!({"bonus": "x"})).to_string()).unwrap();
    let (code, report) = run_json(&wasm, &path, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["error"],
        json!({"code": "plugin_error", "message": "2 of 2 items failed", "limit": null})
    );
    assert_eq!(
        report["result"][1],
        json!({"error": {"code": "plugin_error.invalid_config", "message": "plugin error (invalid_config): \"bonus\" must be a number", "limit": null}})
    );
}

#[test]
fn run_builds_a_history_from_the_tenants_data() {
    let wasm = runtime::plugin_wasm("test-scorer");
    // `{"customer_id": "a-1"}` expands to acme's a-1 and its interactions;
    // globex's records (same customer id) never leak in.
    let (code, report) = run_json(&wasm, &fixture("test-scorer-from-data"), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["result"],
        json!({
            "value": 2.5, "label": "2", "segment": "buyer",
            "explanation": "2 purchase(s), spend 1750 minor units, bonus 0.5",
            "components": [["purchases", 2.0], ["spend_minor", 1750.0]]
        })
    );

    let dir = tempfile::tempdir().unwrap();
    let mut other: Value = serde_json::from_slice(&std::fs::read(fixture("test-scorer-from-data")).unwrap()).unwrap();
    other["call"]["input"]["customer_id"] = json!("a-2");
    let path = dir.path().join("a-2.json");
    std::fs::write(&path, other.to_string()).unwrap();
    let out = run_plugin(&wasm, &path, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: customer_id `a-2`: tenant `acme` has no such customer in the fixture's data\n"
    );
}

/// A one-shot HTTP/1.1 server on loopback: answers one request with a 202
/// and hands back the request's head.
fn one_shot_server() -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(
                b"HTTP/1.1 202 Accepted\r\nx-provider-id: prov-7\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    (port, handle)
}

#[test]
fn run_deliver_reaches_only_the_allowed_host() {
    let (port, server) = one_shot_server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliver.json");
    let fixture = json!({
        "tenant": "acme",
        "call": {"export": "deliver", "input": {
            "id": "m-1", "customer_id": "a-1", "channel": "webhook",
            "to": format!("http://127.0.0.1:{port}/hook"), "subject": null,
            "body": "hello", "metadata": "{}", "attempt": 1, "now": 1_700_000_000_000i64
        }}
    });
    std::fs::write(&path, fixture.to_string()).unwrap();
    let wasm = runtime::plugin_wasm("test-connector");

    // No --allow-host: the network stays closed.
    let (code, report) = run_json(&wasm, &path, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["error"],
        json!({
            "code": "plugin_error.delivery_failed",
            "message": format!("plugin error (delivery_failed): 127.0.0.1:{port} is not in the plugin's allowed hosts"),
            "limit": null
        })
    );

    let host = format!("127.0.0.1:{port}");
    let (code, report) = run_json(&wasm, &path, &["--allow-host", &host]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["result"], json!({"provider_id": "prov-7", "detail": "HTTP 202"}));
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
}

#[test]
fn run_refuses_allow_host_patterns_the_manifest_refuses() {
    // `--allow-host` is parsed by the same `HostPattern` as the manifest's
    // `allowed_hosts`: what one refuses, the other refuses too.
    let wasm = runtime::plugin_wasm("test-connector");
    let path = fixture("test-connector");
    for (bad, reason) in [
        ("*.com", "a wildcard needs at least two labels"),
        ("127.0.0.1:0", "port must be a number from 1 to 65535"),
        ("https://hooks.example.com", "without scheme or path"),
        ("Hooks.example.com", "invalid host name"),
    ] {
        let out = run_plugin(&wasm, &path, &["--allow-host", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{bad}: {}", stderr(&out));
    }
}
