//! Runtime tests with well-behaved plugins (built from `plugins/testing/` by
//! `scripts/build-plugins`): one plugin of each kind called through the real
//! runtime with exact expected values, per-tenant config, tenant isolation
//! of host capabilities, log capture and its cap, the key-value quota, the
//! on-disk compiled-code cache, and load-time refusals (digest mismatch,
//! ungranted import, unknown contract, missing export), and a host lookup
//! failing as a `host-error` the plugin handles rather than a trap.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use crate::support::runtime::*;
use rapport::runtime::contract::channel::{InboundRequest, Message};
use rapport::runtime::contract::cross_selling::{RecommendRequest, Recommendation};
use rapport::runtime::contract::inputs::{Purchase, PurchaseSummary};
use rapport::runtime::contract::rewards::{EarnIntent, InteractionContext, LedgerIntent, RewardOutcome, TierChange};
use rapport::runtime::contract::scoring::CustomerScore;
use rapport::runtime::contract::types::{LoyaltyAccount, Reward, Tier};
use rapport::runtime::{
    CallError, Capability, LoadError, LogLevel, LogLine, PluginErrorKind, PluginKind, Runtime, RuntimeConfig,
    ServiceError,
};
use rapport::runtime::{HostServices, fixture::FixtureServices};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn scoring_plugin_returns_exact_scores_with_per_tenant_config() {
    let rt = runtime();
    let plugin = test_scorer(&rt);
    let services = fixture();
    let input = history(
        customer("a-1", "EXT-A1", "{}"),
        vec![
            purchase("i1", "a-1", 1, 1250, &["A-MID"]),
            purchase("i2", "a-1", 2, 500, &["A-CHEAP"]),
        ],
    );

    let (result, report) = plugin.score(ctx(ACME, r#"{"bonus": 10}"#, &services), &input).await;
    assert_eq!(
        result.unwrap(),
        CustomerScore {
            value: 12.0,
            label: Some("2".into()),
            segment: Some("buyer".into()),
            explanation: "2 purchase(s), spend 1750 minor units, bonus 10".into(),
            components: vec![("purchases".into(), 2.0), ("spend_minor".into(), 1750.0)],
        }
    );
    assert!(report.fuel_used.unwrap() > 0);

    // Another tenant's config reaches the same plugin version unchanged.
    let (result, _) = plugin.score(ctx(GLOBEX, "{}", &services), &input).await;
    assert_eq!(result.unwrap().value, 2.0);

    // A bad config is the plugin's typed error, not a trap.
    let (result, _) = plugin.score(ctx(ACME, r#"{"bonus": "x"}"#, &services), &input).await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(PluginErrorKind::InvalidConfig, "\"bonus\" must be a number".into())
    );

    // Batch: one result per input, in order.
    let empty = history(customer("a-2", "EXT-A2", "{}"), vec![]);
    let (result, _) = plugin
        .score_batch(ctx(ACME, "{}", &services), &[input.clone(), empty])
        .await;
    let scores: Vec<CustomerScore> = result.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(scores.len(), 2);
    assert_eq!(scores[0].value, 2.0);
    assert_eq!(scores[1].segment.as_deref(), Some("prospect"));
    assert_eq!(scores[1].explanation, "0 purchase(s), spend 0 minor units, bonus 0");
}

#[tokio::test]
async fn log_lines_are_captured_and_capped() {
    let rt = runtime();
    let plugin = test_scorer(&rt);
    let services = fixture();
    let population = vec![
        PurchaseSummary {
            customer_id: "a-1".into(),
            created_at: 0,
            purchases: vec![
                Purchase {
                    at: 1,
                    amount_minor: 1000,
                    currency: "USD".into(),
                },
                Purchase {
                    at: 2,
                    amount_minor: 750,
                    currency: "USD".into(),
                },
            ],
        };
        3
    ];
    let (result, report) = plugin.fit(ctx(ACME, "{}", &services), &population, 10).await;
    assert_eq!(result.unwrap(), "{}");
    assert_eq!(report.logs, fit_log(3));
    assert_eq!(report.logs_dropped, 0);

    // The line is 20 + 10 + 1 = 31 bytes: a 30-byte cap drops it, counted.
    let mut def = definition(
        "test-scorer",
        PluginKind::ScoringRule,
        &[Capability::Config, Capability::Log],
    );
    def.limits.max_log_bytes = 30;
    let capped = rt.load(def).unwrap();
    let (result, report) = capped.fit(ctx(ACME, "{}", &services), &population, 10).await;
    assert_eq!(result.unwrap(), "{}");
    assert!(report.logs.is_empty());
    assert_eq!(report.logs_dropped, 1);
}

/// The one line test-scorer logs at the end of a fit over `n` customers.
fn fit_log(n: usize) -> Vec<LogLine> {
    vec![LogLine {
        level: LogLevel::Info,
        message: format!("fit over {n} customers"),
        fields: vec![("population".into(), n.to_string())],
    }]
}

/// A population larger than one chunk is fitted chunk by chunk on ONE
/// instance (`fit-chunk` per `FIT_CHUNK` summaries, then `fit-finish`):
/// the plugin's count at the end covers every customer exactly once, and
/// its one log line comes from `fit-finish`.
#[tokio::test]
async fn fit_streams_a_population_larger_than_a_chunk_through_one_instance() {
    let rt = runtime();
    let plugin = test_scorer(&rt);
    let services = fixture();
    let n = 2 * rapport::runtime::FIT_CHUNK + 123;
    let population: Vec<PurchaseSummary> = (0..n)
        .map(|i| PurchaseSummary {
            customer_id: format!("c{i}"),
            created_at: 0,
            purchases: vec![Purchase {
                at: i as i64,
                amount_minor: 100,
                currency: "USD".into(),
            }],
        })
        .collect();
    let (result, report) = plugin.fit(ctx(ACME, "{}", &services), &population, 10).await;
    assert_eq!(result.unwrap(), "{}");
    assert_eq!(report.logs, fit_log(n));
    // A second fit starts from nothing (fit-finish forgot the chunks).
    let (result, report) = plugin.fit(ctx(ACME, "{}", &services), &population[..5], 10).await;
    assert_eq!(result.unwrap(), "{}");
    assert_eq!(report.logs[0].message, "fit over 5 customers");
    let mut session = plugin.session(ctx(ACME, "{}", &services));
    let (first, _) = session.fit(&population[..7], 10).await;
    let (second, report) = session.fit(&population[..3], 10).await;
    assert_eq!((first.unwrap(), second.unwrap()), ("{}".to_string(), "{}".to_string()));
    assert_eq!(
        report.logs[0].message, "fit over 3 customers",
        "a fit on a reused instance does not count the previous one's chunks"
    );
}

#[tokio::test]
async fn cross_sell_plugin_sees_only_its_tenants_catalogue() {
    let rt = runtime();
    let plugin = rt
        .load(definition(
            "test-cross-sell",
            PluginKind::CrossSell,
            &[Capability::Catalog],
        ))
        .unwrap();
    let services = fixture();
    let request = RecommendRequest {
        history: history(
            customer("a-1", "EXT-A1", "{}"),
            vec![purchase("i1", "a-1", 1, 500, &["A-CHEAP"])],
        ),
        basket: None,
        limit: 5,
    };
    let (result, _) = plugin.recommend(ctx(ACME, "{}", &services), &request).await;
    assert_eq!(
        result.unwrap(),
        vec![
            Recommendation {
                sku: "A-TOP".into(),
                score: 99.0,
                reason: "not bought yet; price 99 USD".into()
            },
            Recommendation {
                sku: "A-MID".into(),
                score: 12.5,
                reason: "not bought yet; price 12.5 USD".into()
            },
        ]
    );
    // The same request for globex sees globex's catalogue only.
    let (result, _) = plugin.recommend(ctx(GLOBEX, "{}", &services), &request).await;
    assert_eq!(
        result.unwrap(),
        vec![Recommendation {
            sku: "G-ONLY".into(),
            score: 1000.0,
            reason: "not bought yet; price 1000 USD".into()
        }]
    );
    let (result, _) = plugin
        .fit_baskets(
            ctx(ACME, "{}", &services),
            &[vec!["A".into()], vec!["B".into(), "C".into()]],
        )
        .await;
    assert_eq!(result.unwrap(), r#"{"baskets":2}"#);
}

#[tokio::test]
async fn reward_plugin_returns_intents_and_redeemable_rewards() {
    let rt = runtime();
    let plugin = rt
        .load(definition("test-reward", PluginKind::RewardScheme, &[]))
        .unwrap();
    let services = fixture();
    let tiers = vec![
        Tier {
            id: "bronze".into(),
            name: "Bronze".into(),
            rank: 0,
            min_points: 0,
        },
        Tier {
            id: "gold".into(),
            name: "Gold".into(),
            rank: 1,
            min_points: 1000,
        },
    ];
    let account = LoyaltyAccount {
        customer_id: "a-1".into(),
        balance: 300,
        lifetime_earned: 300,
        tier_id: Some("bronze".into()),
    };
    let context = InteractionContext {
        interaction: purchase("i1", "a-1", 1, 12_345, &["A-TOP"]),
        account: account.clone(),
        tiers: tiers.clone(),
        rolling_spend_minor: 150_000,
        now: 2,
    };
    let (result, _) = plugin.on_interaction(ctx(ACME, "{}", &services), &context).await;
    assert_eq!(
        result.unwrap(),
        RewardOutcome {
            ledger: vec![LedgerIntent::Earn(EarnIntent {
                points: 123,
                reason: "1 point per unit".into(),
                expires_at: None
            })],
            tier_change: Some(TierChange {
                tier_id: Some("gold".into()),
                reason: "rolling spend >= 100000 minor".into()
            }),
        }
    );
    let rewards = vec![
        Reward {
            id: "cheap".into(),
            name: "Cheap".into(),
            cost_points: 100,
            min_tier_rank: None,
            stock: None,
        },
        Reward {
            id: "dear".into(),
            name: "Dear".into(),
            cost_points: 1000,
            min_tier_rank: None,
            stock: None,
        },
        Reward {
            id: "gold-only".into(),
            name: "Gold".into(),
            cost_points: 10,
            min_tier_rank: Some(1),
            stock: None,
        },
        Reward {
            id: "sold-out".into(),
            name: "Gone".into(),
            cost_points: 10,
            min_tier_rank: None,
            stock: Some(0),
        },
    ];
    let (result, _) = plugin
        .redeemable(ctx(ACME, "{}", &services), &account, &tiers, &rewards)
        .await;
    assert_eq!(result.unwrap(), vec!["cheap".to_string()]);

    // Wrong kind: a reward scheme has no `score`.
    let (result, _) = plugin
        .score(ctx(ACME, "{}", &services), &history(customer("a-1", "E", "{}"), vec![]))
        .await;
    assert_eq!(result.unwrap_err(), CallError::WrongKind);
}

/// A one-shot HTTP/1.1 server on loopback: answers one request with
/// `response` and hands back what it received.
fn one_shot_server(response: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        // Read headers, then the body by content-length.
        loop {
            let n = stream.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        stream.write_all(response.as_bytes()).unwrap();
        String::from_utf8_lossy(&got).to_string()
    });
    (port, handle)
}

fn message(to: String) -> Message {
    Message {
        id: "m-1".into(),
        customer_id: "a-1".into(),
        channel: "webhook".into(),
        to,
        subject: None,
        body: "hello".into(),
        metadata: "{}".into(),
        attempt: 1,
        now: 1_700_000_000_000,
    }
}

#[tokio::test]
async fn connector_reaches_allowed_hosts_only() {
    let rt = runtime();
    let (port, server) = one_shot_server(
        "HTTP/1.1 202 Accepted\r\nx-provider-id: prov-7\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let mut def = definition(
        "test-connector",
        PluginKind::ChannelConnector,
        &[Capability::OutboundHttp],
    );
    def.allowed_hosts = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let plugin = rt.load(def).unwrap();
    let services = fixture();

    let (result, _) = plugin
        .deliver(
            ctx(ACME, "{}", &services),
            &message(format!("http://127.0.0.1:{port}/hook")),
        )
        .await;
    let receipt = result.unwrap();
    assert_eq!(receipt.provider_id.as_deref(), Some("prov-7"));
    assert_eq!(receipt.detail.as_deref(), Some("HTTP 202"));
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
    assert!(
        request.to_ascii_lowercase().contains("idempotency-key: m-1"),
        "{request}"
    );

    // Another port on the same host, or another host: denied by the host.
    let (result, _) = plugin
        .deliver(
            ctx(ACME, "{}", &services),
            &message(format!("http://127.0.0.1:{}/x", port + 1)),
        )
        .await;
    let other_port = port.wrapping_add(1);
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::DeliveryFailed,
            format!("127.0.0.1:{other_port} is not in the plugin's allowed hosts")
        )
    );
    let (result, _) = plugin
        .deliver(ctx(ACME, "{}", &services), &message("http://example.com/x".into()))
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::DeliveryFailed,
            "example.com:80 is not in the plugin's allowed hosts".into()
        )
    );

    // Inbound: signature checked by the plugin, event parsed.
    let body = br#"{"customer":"EXT-A1","event":"email_open","at":1700000000000,"id":"evt-1"}"#.to_vec();
    let signature = hex::encode(Sha256::digest(&body));
    let request = InboundRequest {
        method: "POST".into(),
        path: "/inbound".into(),
        headers: vec![("x-test-signature".into(), signature)],
        body: body.clone(),
        received_at: 5,
    };
    let (result, _) = plugin.parse_inbound(ctx(ACME, "{}", &services), &request).await;
    let events = result.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].customer_external_id, "EXT-A1");
    assert_eq!(events[0].kind, "email_open");
    assert_eq!(events[0].occurred_at, 1_700_000_000_000);
    assert_eq!(events[0].idempotency_key, "evt-1");
    assert_eq!(events[0].payload.as_bytes(), &body[..]);
    let unsigned = InboundRequest {
        headers: vec![],
        ..request
    };
    let (result, _) = plugin.parse_inbound(ctx(ACME, "{}", &services), &unsigned).await;
    assert!(matches!(
        result.unwrap_err(),
        CallError::Guest(PluginErrorKind::Unauthenticated, _)
    ));
}

#[tokio::test]
async fn outbound_http_is_refused_to_other_kinds() {
    let rt = runtime();
    let err = rt
        .load(definition(
            "test-scorer",
            PluginKind::ScoringRule,
            &[Capability::Config, Capability::Log, Capability::OutboundHttp],
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::CapabilityNotForKind {
                capability: Capability::OutboundHttp,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_plugin_cannot_read_another_tenants_customer() {
    let rt = runtime();
    let plugin = rt
        .load(definition(
            "tenant-probe",
            PluginKind::ScoringRule,
            &[Capability::Customers],
        ))
        .unwrap();
    let services = fixture();
    // acme's plugin call probes globex's customer g-1: not found.
    let probe_other = history(customer("a-1", "EXT-A1", r#"{"probe_customer_id":"g-1"}"#), vec![]);
    let (result, _) = plugin.score(ctx(ACME, "{}", &services), &probe_other).await;
    let score = result.unwrap();
    assert_eq!((score.value, score.label.as_deref()), (0.0, Some("not-found")));
    assert_eq!(score.explanation, "customer g-1 not found");
    // Its own customer a-2 is visible.
    let probe_own = history(customer("a-1", "EXT-A1", r#"{"probe_customer_id":"a-2"}"#), vec![]);
    let (result, _) = plugin.score(ctx(ACME, "{}", &services), &probe_own).await;
    let score = result.unwrap();
    assert_eq!((score.value, score.label.as_deref()), (1.0, Some("visible")));
    assert_eq!(score.explanation, "customer a-2 visible (external id EXT-A2)");
    // And globex sees g-1 but not a-2.
    let (result, _) = plugin.score(ctx(GLOBEX, "{}", &services), &probe_other).await;
    assert_eq!(result.unwrap().value, 1.0);
    let (result, _) = plugin.score(ctx(GLOBEX, "{}", &services), &probe_own).await;
    assert_eq!(result.unwrap().value, 0.0);
}

#[tokio::test]
async fn kv_quota_is_enforced_per_tenant_and_plugin() {
    let services = FixtureServices::default();
    let (acme, globex) = (tenant(ACME), tenant(GLOBEX));
    // key (1) + value (9) = 10 bytes: exactly at a 10-byte quota.
    services.kv_set(&acme, "p", "a", &[0; 9], 10).await.unwrap();
    assert_eq!(
        services.kv_set(&acme, "p", "b", &[0; 1], 10).await.unwrap_err(),
        ServiceError::QuotaExceeded("key-value store would hold 12 bytes, over the 10-byte limit".into())
    );
    // Overwriting a key counts its new size only.
    services.kv_set(&acme, "p", "a", &[1; 9], 10).await.unwrap();
    // Other plugins and tenants have their own quota and their own keys.
    services.kv_set(&acme, "q", "b", &[0; 9], 10).await.unwrap();
    services.kv_set(&globex, "p", "b", &[0; 9], 10).await.unwrap();
    assert_eq!(services.kv_get(&acme, "p", "a").await.unwrap(), Some(vec![1; 9]));
    assert_eq!(services.kv_get(&globex, "p", "a").await.unwrap(), None);
    assert_eq!(
        services.kv_list_keys(&acme, "p", "", 1000).await.unwrap(),
        vec!["a".to_string()]
    );
    services.kv_delete(&acme, "p", "a").await.unwrap();
    services.kv_set(&acme, "p", "b", &[0; 9], 10).await.unwrap();
}

#[tokio::test]
async fn kv_capability_reads_the_calling_tenants_store() {
    let rt = runtime();
    // hostile-ungranted reads kv key "probe"; granted here, it loads.
    let plugin = rt
        .load(definition(
            "hostile-ungranted",
            PluginKind::ScoringRule,
            &[Capability::Kv],
        ))
        .unwrap();
    let services = fixture();
    services
        .kv_set(&tenant(GLOBEX), "hostile-ungranted", "probe", b"x", 100)
        .await
        .unwrap();
    let input = history(customer("a-1", "EXT-A1", "{}"), vec![]);
    let (result, _) = plugin.score(ctx(ACME, "{}", &services), &input).await;
    assert_eq!(result.unwrap().value, 0.0);
    let (result, _) = plugin.score(ctx(GLOBEX, "{}", &services), &input).await;
    assert_eq!(result.unwrap().value, 1.0);
}

#[tokio::test]
async fn load_refuses_a_component_built_against_a_stale_contract() {
    let rt = runtime();
    let err = rt
        .load(definition("hostile-stale-contract", PluginKind::ScoringRule, &[]))
        .unwrap_err();
    match &err {
        LoadError::ExportTypes { plugin, kind, message } => {
            assert_eq!(
                (plugin.as_str(), *kind),
                ("hostile-stale-contract", PluginKind::ScoringRule)
            );
            assert!(message.contains("type mismatch"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("another revision of the WIT"), "{err}");
}

#[tokio::test]
async fn load_refuses_ungranted_imports_bad_digests_and_unknown_contracts() {
    let rt = runtime();
    let err = rt
        .load(definition("hostile-ungranted", PluginKind::ScoringRule, &[]))
        .unwrap_err();
    match &err {
        LoadError::ImportNotGranted { import, capability, .. } => {
            assert_eq!(import, "rapport:crm/kv@0.1.0");
            assert_eq!(*capability, Capability::Kv);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("rapport:crm/kv@0.1.0"), "{err}");

    let mut def = definition("test-reward", PluginKind::RewardScheme, &[]);
    let actual = def.sha256.clone();
    def.sha256 = "00".repeat(32);
    let err = rt.load(def).unwrap_err();
    assert!(
        matches!(&err, LoadError::DigestMismatch { declared, actual: a, .. } if *declared == "00".repeat(32) && *a == actual),
        "{err}"
    );
    assert!(err.to_string().contains(&actual), "{err}");

    let mut def = definition("test-reward", PluginKind::RewardScheme, &[]);
    def.contract = "rapport:crm@9.9.9".into();
    assert!(matches!(rt.load(def).unwrap_err(), LoadError::UnknownContract { .. }));

    // A reward scheme loaded as a scoring rule lacks the export.
    let err = rt
        .load(definition("test-reward", PluginKind::ScoringRule, &[]))
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingExport { export, .. } if export == "rapport:crm/scoring@0.1.0"),
        "{err}"
    );

    let mut def = definition("test-reward", PluginKind::RewardScheme, &[]);
    def.wasm = b"not wasm".to_vec();
    def.sha256 = sha256(&def.wasm);
    assert!(matches!(rt.load(def).unwrap_err(), LoadError::Compile { .. }));
}

#[tokio::test]
async fn compiled_code_is_cached_on_disk_across_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let def = definition("test-reward", PluginKind::RewardScheme, &[]);

    let first = Runtime::new(config.clone()).unwrap();
    let plugin = first.load(def.clone()).unwrap();
    assert!(!plugin.compiled_from_cache());
    assert_eq!(first.compilations(), 1);
    let path = first.cache_path(&def.sha256).unwrap();
    assert!(path.is_file(), "{} missing", path.display());
    // Same runtime, same digest: compiled once.
    assert!(first.load(def.clone()).unwrap().compiled_from_cache());
    assert_eq!(first.compilations(), 1);

    // A restart (new runtime, same cache dir) loads without compiling.
    let second = Runtime::new(config.clone()).unwrap();
    let plugin = second.load(def.clone()).unwrap();
    assert!(plugin.compiled_from_cache());
    assert_eq!(second.compilations(), 0);
    let services = fixture();
    let account = LoyaltyAccount {
        customer_id: "a-1".into(),
        balance: 50,
        lifetime_earned: 50,
        tier_id: None,
    };
    let rewards = vec![Reward {
        id: "r".into(),
        name: "R".into(),
        cost_points: 50,
        min_tier_rank: None,
        stock: None,
    }];
    let (result, _) = plugin
        .redeemable(ctx(ACME, "{}", &services), &account, &[], &rewards)
        .await;
    assert_eq!(result.unwrap(), vec!["r".to_string()]);

    // A corrupt cache file is recompiled, not trusted.
    std::fs::write(&path, b"garbage").unwrap();
    let third = Runtime::new(config).unwrap();
    assert!(!third.load(def).unwrap().compiled_from_cache());
    assert_eq!(third.compilations(), 1);
}

#[tokio::test]
async fn fixture_loads_from_json() {
    let services = FixtureServices::from_json(
        r#"{"tenants":{"acme":{"customers":[{"id":"c1","external_id":"E1","attributes":"{}","created_at":5}]}}}"#,
    )
    .unwrap();
    let c = services.get_customer(&tenant(ACME), "c1").await.unwrap().unwrap();
    assert_eq!((c.external_id.as_str(), c.name, c.created_at), ("E1", None, 5));
    assert_eq!(services.get_customer(&tenant(GLOBEX), "c1").await.unwrap(), None);
    assert!(FixtureServices::from_json(r#"{"tenants":{"acme":{"bogus":1}}}"#).is_err());
    let _ = Arc::new(services);
}

/// A server that accepts one connection and answers `response` after
/// `delay` (or never reads the request at all when `delay` is long).
fn slow_server(response: &'static str, delay: std::time::Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let _ = stream.read(&mut buf);
        std::thread::sleep(delay);
        let _ = stream.write_all(response.as_bytes());
    });
    port
}

#[tokio::test]
async fn outbound_http_enforces_timeout_and_response_cap() {
    let rt = runtime();
    let services = fixture();
    let load = |port: u16| {
        let mut def = definition(
            "test-connector",
            PluginKind::ChannelConnector,
            &[Capability::OutboundHttp],
        );
        def.allowed_hosts = vec![format!("127.0.0.1:{port}").parse().unwrap()];
        def.limits.http_timeout_ms = 100;
        def.limits.http_max_response_bytes = 16;
        rt.load(def).unwrap()
    };

    let port = slow_server(
        "HTTP/1.1 200 OK\r\ncontent-length: 64\r\nconnection: close\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123",
        std::time::Duration::ZERO,
    );
    let (result, _) = load(port)
        .deliver(
            ctx(ACME, "{}", &services),
            &message(format!("http://127.0.0.1:{port}/")),
        )
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(PluginErrorKind::DeliveryFailed, "response too large".into())
    );

    let port = slow_server(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        std::time::Duration::from_secs(2),
    );
    let started = std::time::Instant::now();
    let (result, _) = load(port)
        .deliver(
            ctx(ACME, "{}", &services),
            &message(format!("http://127.0.0.1:{port}/")),
        )
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(PluginErrorKind::DeliveryRetryable, "timeout".into())
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_000),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn calls_are_counted_in_metrics() {
    let metrics = rapport::telemetry::Metrics::global();
    let rt = runtime();
    let mut def = definition("test-reward", PluginKind::RewardScheme, &[]);
    def.id = "metrics-probe".into();
    let plugin = rt.load(def).unwrap();
    let services = fixture();
    let account = LoyaltyAccount {
        customer_id: "a-1".into(),
        balance: 0,
        lifetime_earned: 0,
        tier_id: None,
    };
    for _ in 0..2 {
        let (result, _) = plugin.redeemable(ctx(ACME, "{}", &services), &account, &[], &[]).await;
        assert_eq!(result.unwrap(), Vec::<String>::new());
    }
    let (result, _) = plugin
        .score(ctx(ACME, "{}", &services), &history(customer("a-1", "E", "{}"), vec![]))
        .await;
    assert_eq!(result.unwrap_err(), CallError::WrongKind);
    let text = metrics.render();
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).map(str::to_owned);
    assert_eq!(
        line(r#"rapport_plugin_calls_total{plugin="metrics-probe",tenant="acme",kind="reward-scheme",export="redeemable"}"#)
            .as_deref(),
        Some(r#"rapport_plugin_calls_total{plugin="metrics-probe",tenant="acme",kind="reward-scheme",export="redeemable"} 2"#),
        "{text}"
    );
    assert_eq!(
        line(r#"rapport_plugin_errors_total{plugin="metrics-probe",tenant="acme",cause="wrong_kind"}"#).as_deref(),
        Some(r#"rapport_plugin_errors_total{plugin="metrics-probe",tenant="acme",cause="wrong_kind"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"rapport_plugin_call_duration_seconds_count{plugin="metrics-probe",tenant="acme",export="redeemable"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"rapport_plugin_fuel_used_total{plugin="metrics-probe",tenant="acme"}"#),
        "{text}"
    );
}
/// Host services whose backing store is down: every call fails.
struct DownServices;

#[async_trait::async_trait]
impl HostServices for DownServices {
    async fn get_customer(
        &self,
        _: &rapport::store::TenantId,
        _: &str,
    ) -> Result<Option<rapport::runtime::contract::types::Customer>, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn get_customer_by_external_id(
        &self,
        _: &rapport::store::TenantId,
        _: &str,
    ) -> Result<Option<rapport::runtime::contract::types::Customer>, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn list_customers(
        &self,
        _: &rapport::store::TenantId,
        _: Option<&str>,
        _: u32,
    ) -> Result<rapport::runtime::contract::rapport::crm::customers::CustomerPage, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn list_interactions(
        &self,
        _: &rapport::store::TenantId,
        _: &str,
        _: Option<&str>,
        _: u32,
    ) -> Result<rapport::runtime::contract::rapport::crm::interactions::InteractionPage, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn get_account(&self, _: &rapport::store::TenantId, _: &str) -> Result<Option<LoyaltyAccount>, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn list_ledger(
        &self,
        _: &rapport::store::TenantId,
        _: &str,
        _: Option<&str>,
        _: u32,
    ) -> Result<rapport::runtime::contract::rapport::crm::loyalty::LedgerPage, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn list_tiers(&self, _: &rapport::store::TenantId) -> Result<Vec<Tier>, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn list_rewards(&self, _: &rapport::store::TenantId) -> Result<Vec<Reward>, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn get_product(
        &self,
        _: &rapport::store::TenantId,
        _: &str,
    ) -> Result<Option<rapport::runtime::contract::types::Product>, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn list_products(
        &self,
        _: &rapport::store::TenantId,
        _: Option<&str>,
        _: Option<&str>,
        _: u32,
    ) -> Result<rapport::runtime::contract::rapport::crm::catalog::ProductPage, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn kv_get(&self, _: &rapport::store::TenantId, _: &str, _: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn kv_set(
        &self,
        _: &rapport::store::TenantId,
        _: &str,
        _: &str,
        _: &[u8],
        _: u64,
    ) -> Result<(), ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn kv_delete(&self, _: &rapport::store::TenantId, _: &str, _: &str) -> Result<(), ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
    async fn kv_list_keys(
        &self,
        _: &rapport::store::TenantId,
        _: &str,
        _: &str,
        _: u32,
    ) -> Result<Vec<String>, ServiceError> {
        Err(ServiceError::Unavailable("database is down".into()))
    }
}

#[tokio::test]
async fn a_failing_host_lookup_is_a_host_error_the_plugin_handles_not_a_trap() {
    let rt = runtime();
    let plugin = rt
        .load(definition(
            "tenant-probe",
            PluginKind::ScoringRule,
            &[Capability::Customers],
        ))
        .unwrap();
    let down = rapport::runtime::CallContext {
        tenant: tenant(ACME),
        config_json: "{}".into(),
        services: Arc::new(DownServices),
    };
    let input = history(customer("a-1", "EXT-A1", r#"{"probe_customer_id":"a-2"}"#), vec![]);
    // tenant-probe maps the `host-error` of get-customer to its own
    // `plugin-error::unavailable`, carrying the host's message.
    let (result, _) = plugin.score(down, &input).await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::Unavailable,
            "get-customer: HostError::Unavailable(\"database is down\")".into()
        )
    );
    // The instance was not poisoned: the next call, with the store back, works.
    let (result, _) = plugin.score(ctx(ACME, "{}", &fixture()), &input).await;
    assert_eq!(result.unwrap().label.as_deref(), Some("visible"));
}
