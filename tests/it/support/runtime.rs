//! Helpers for the tests that drive the plugin runtime directly, without a
//! server: plugin definitions for the guest components that
//! `scripts/build-plugins` builds from `plugins/`, and a two-tenant
//! in-memory fixture.

use std::collections::BTreeSet;
use std::sync::Arc;

use rapport::runtime::contract::inputs::CustomerHistory;
use rapport::runtime::contract::types::{Customer, Interaction, LineItem, Money, Product};
use rapport::runtime::fixture::{FixtureData, FixtureServices, TenantFixture};
use rapport::runtime::{CallContext, Capability, Limits, Plugin, PluginDefinition, PluginKind, Runtime, RuntimeConfig};
use rapport::store::TenantId;
use sha2::{Digest, Sha256};

pub use super::plugin_wasm;

pub const ACME: &str = "acme";
pub const GLOBEX: &str = "globex";

pub fn wasm(crate_name: &str) -> Vec<u8> {
    std::fs::read(plugin_wasm(crate_name)).unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn definition(crate_name: &str, kind: PluginKind, capabilities: &[Capability]) -> PluginDefinition {
    let wasm = wasm(crate_name);
    PluginDefinition {
        id: crate_name.to_owned(),
        kind,
        contract: "rapport:crm@0.1.0".to_owned(),
        sha256: sha256(&wasm),
        wasm,
        capabilities: capabilities.iter().copied().collect::<BTreeSet<_>>(),
        allowed_hosts: Vec::new(),
        limits: Limits::default(),
    }
}

pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).unwrap()
}

/// `test-scorer` with the capabilities it imports (`config`, `log`).
pub fn test_scorer(rt: &Runtime) -> Arc<Plugin> {
    rt.load(definition(
        "test-scorer",
        PluginKind::ScoringRule,
        &[Capability::Config, Capability::Log],
    ))
    .unwrap()
}

pub fn tenant(t: &str) -> TenantId {
    TenantId::for_tests(t.to_owned())
}

pub fn ctx(t: &str, config_json: &str, services: &Arc<FixtureServices>) -> CallContext {
    CallContext {
        tenant: tenant(t),
        config_json: config_json.to_owned(),
        services: services.clone(),
    }
}

pub fn usd(amount_minor: i64) -> Money {
    Money {
        currency: "USD".into(),
        amount_minor,
    }
}

pub fn customer(id: &str, external_id: &str, attributes: &str) -> Customer {
    Customer {
        id: id.into(),
        external_id: external_id.into(),
        name: Some(format!("Customer {id}")),
        email: None,
        phone: None,
        attributes: attributes.into(),
        created_at: 1_700_000_000_000,
    }
}

pub fn purchase(id: &str, customer_id: &str, at: i64, amount_minor: i64, skus: &[&str]) -> Interaction {
    Interaction {
        id: id.into(),
        customer_id: customer_id.into(),
        kind: "purchase".into(),
        channel: Some("web".into()),
        occurred_at: at,
        amount: Some(usd(amount_minor)),
        items: skus
            .iter()
            .map(|s| LineItem {
                sku: (*s).into(),
                quantity: 1,
                unit_price: usd(amount_minor),
            })
            .collect(),
        payload: "{}".into(),
    }
}

pub fn product(sku: &str, price_minor: i64) -> Product {
    Product {
        sku: sku.into(),
        name: format!("Product {sku}"),
        category: None,
        price: usd(price_minor),
        attributes: "{}".into(),
    }
}

/// The compact history plugins receive, built from full records as the
/// server builds it.
pub fn history(customer: Customer, interactions: Vec<Interaction>) -> CustomerHistory {
    rapport::runtime::history::compact(customer, &interactions, false, 1_750_000_000_000)
}

/// Two tenants with disjoint customers and catalogues: `acme` (a-1, a-2;
/// products A-CHEAP 500, A-MID 1250, A-TOP 9900) and `globex` (g-1;
/// products G-ONLY 100000).
pub fn fixture() -> Arc<FixtureServices> {
    let mut data = FixtureData::default();
    data.tenants.insert(
        ACME.into(),
        TenantFixture {
            customers: vec![customer("a-1", "EXT-A1", "{}"), customer("a-2", "EXT-A2", "{}")],
            products: vec![product("A-CHEAP", 500), product("A-MID", 1250), product("A-TOP", 9900)],
            ..TenantFixture::default()
        },
    );
    data.tenants.insert(
        GLOBEX.into(),
        TenantFixture {
            customers: vec![customer("g-1", "EXT-G1", "{}")],
            products: vec![product("G-ONLY", 100_000)],
            ..TenantFixture::default()
        },
    );
    Arc::new(FixtureServices::new(data))
}
