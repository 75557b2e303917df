//! The integration tests: one binary, one module per area, one support
//! module. Each module starts the real app on port 0 (`support::TestApp`)
//! or drives the plugin runtime directly (`support::runtime`); tests of the
//! store run on SQLite and PostgreSQL through `both_backends!`.
//!
//! A new area is a new module declared here: there is no other list of
//! test files to keep in step.

#[macro_use]
mod support;

mod api_admin;
mod api_campaigns;
mod api_channels;
mod api_contract;
mod api_crm_metrics;
mod api_customers;
mod api_gdpr;
mod api_interactions;
mod api_loyalty;
mod api_messages;
mod api_playbook;
mod api_plugin_calls;
mod api_plugin_lifecycle;
mod api_plugins;
mod api_products;
mod api_rewards;
mod api_scores;
mod api_triggers;
mod cancellation;
mod cluster_delivery;
mod connectors;
mod import;
mod manifest;
mod plugin_tool;
mod plugin_versions;
mod query_plans;
mod runtime_hostile;
mod runtime_plugins;

/// A test file that no `mod` line names would never compile or run.
#[test]
fn every_test_file_is_a_declared_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/it");
    let main = std::fs::read_to_string(dir.join("main.rs")).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "main") {
            assert!(
                main.lines().any(|l| l == format!("mod {module};")),
                "tests/it/{name} is not declared in tests/it/main.rs"
            );
        }
    }
}
