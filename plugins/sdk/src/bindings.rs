//! The generated component bindings (wasm32 only), one module per world.
//!
//! Every world is generated with `pub_export_macro`: the SDK's own custom
//! section then describes the world's imports only (unused ones are dropped
//! by `wit-component`), and the world's exports are described only where a
//! plugin invokes an export macro. So one SDK serves all four kinds and a
//! component exports exactly the world it asked for. The later worlds reuse
//! the shared interfaces generated in `scoring_rule` (`with`), so there is
//! one Rust type per WIT type.

pub mod scoring_rule {
    wit_bindgen::generate!({
        path: "../../wit/crm@0.1.0",
        world: "scoring-rule",
        pub_export_macro: true,
        export_macro_name: "export_scoring_rule_bindings",
        default_bindings_module: "rapport_plugin_sdk::bindings::scoring_rule",
    });
}

pub mod cross_sell {
    wit_bindgen::generate!({
        path: "../../wit/crm@0.1.0",
        world: "cross-sell",
        pub_export_macro: true,
        export_macro_name: "export_cross_sell_bindings",
        default_bindings_module: "rapport_plugin_sdk::bindings::cross_sell",
        with: {
            "rapport:crm/types@0.1.0": crate::bindings::scoring_rule::rapport::crm::types,
            "rapport:crm/inputs@0.1.0": crate::bindings::scoring_rule::rapport::crm::inputs,
            "rapport:crm/customers@0.1.0": crate::bindings::scoring_rule::rapport::crm::customers,
            "rapport:crm/interactions@0.1.0": crate::bindings::scoring_rule::rapport::crm::interactions,
            "rapport:crm/loyalty@0.1.0": crate::bindings::scoring_rule::rapport::crm::loyalty,
            "rapport:crm/catalog@0.1.0": crate::bindings::scoring_rule::rapport::crm::catalog,
            "rapport:crm/kv@0.1.0": crate::bindings::scoring_rule::rapport::crm::kv,
            "rapport:crm/log@0.1.0": crate::bindings::scoring_rule::rapport::crm::log,
            "rapport:crm/config@0.1.0": crate::bindings::scoring_rule::rapport::crm::config,
        },
    });
}

pub mod reward_scheme {
    wit_bindgen::generate!({
        path: "../../wit/crm@0.1.0",
        world: "reward-scheme",
        pub_export_macro: true,
        export_macro_name: "export_reward_scheme_bindings",
        default_bindings_module: "rapport_plugin_sdk::bindings::reward_scheme",
        with: {
            "rapport:crm/types@0.1.0": crate::bindings::scoring_rule::rapport::crm::types,
            "rapport:crm/customers@0.1.0": crate::bindings::scoring_rule::rapport::crm::customers,
            "rapport:crm/interactions@0.1.0": crate::bindings::scoring_rule::rapport::crm::interactions,
            "rapport:crm/loyalty@0.1.0": crate::bindings::scoring_rule::rapport::crm::loyalty,
            "rapport:crm/catalog@0.1.0": crate::bindings::scoring_rule::rapport::crm::catalog,
            "rapport:crm/kv@0.1.0": crate::bindings::scoring_rule::rapport::crm::kv,
            "rapport:crm/log@0.1.0": crate::bindings::scoring_rule::rapport::crm::log,
            "rapport:crm/config@0.1.0": crate::bindings::scoring_rule::rapport::crm::config,
        },
    });
}

pub mod channel_connector {
    wit_bindgen::generate!({
        path: "../../wit/crm@0.1.0",
        world: "channel-connector",
        pub_export_macro: true,
        export_macro_name: "export_channel_connector_bindings",
        default_bindings_module: "rapport_plugin_sdk::bindings::channel_connector",
        with: {
            "rapport:crm/types@0.1.0": crate::bindings::scoring_rule::rapport::crm::types,
            "rapport:crm/customers@0.1.0": crate::bindings::scoring_rule::rapport::crm::customers,
            "rapport:crm/interactions@0.1.0": crate::bindings::scoring_rule::rapport::crm::interactions,
            "rapport:crm/loyalty@0.1.0": crate::bindings::scoring_rule::rapport::crm::loyalty,
            "rapport:crm/catalog@0.1.0": crate::bindings::scoring_rule::rapport::crm::catalog,
            "rapport:crm/kv@0.1.0": crate::bindings::scoring_rule::rapport::crm::kv,
            "rapport:crm/log@0.1.0": crate::bindings::scoring_rule::rapport::crm::log,
            "rapport:crm/config@0.1.0": crate::bindings::scoring_rule::rapport::crm::config,
        },
    });
}
