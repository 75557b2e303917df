//! Host bindings for contract `rapport:crm@0.1.0` (wit/crm@0.1.0).
//!
//! One `bindgen!` over a host-side world that imports every capability and
//! exports every plugin interface: the runtime never instantiates this world
//! as a whole. It links imports one interface at a time (deny by default,
//! see `runtime::capabilities`) and loads each export interface on its own
//! through its `GuestIndices`, so a scoring plugin needs only `scoring`.
//!
//! Imports are `async | trappable`: they await the tenant-scoped
//! [`HostServices`](super::services::HostServices); a service failure reaches
//! the guest through the function's `host-error` channel, while host-side
//! faults the guest cannot handle (e.g. a broken invariant) may still trap.

wasmtime::component::bindgen!({
    inline: "
        package rapport:host@0.1.0;
        world host {
            include rapport:crm/channel-connector@0.1.0;
            export rapport:crm/scoring@0.1.0;
            export rapport:crm/cross-selling@0.1.0;
            export rapport:crm/rewards@0.1.0;
        }
    ",
    path: "../wit/crm@0.1.0",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
});

/// The contract string that selects these bindings.
pub const CONTRACT: &str = "rapport:crm@0.1.0";
/// Import names of this contract, as they appear in a component.
pub const PACKAGE_PREFIX: &str = "rapport:crm/";
pub const VERSION_SUFFIX: &str = "@0.1.0";

pub use exports::rapport::crm::channel;
pub use exports::rapport::crm::cross_selling;
pub use exports::rapport::crm::rewards;
pub use exports::rapport::crm::scoring;
// `self::`: the generated module `rapport` would otherwise be ambiguous with
// this crate's own name, which rustdoc passes as `--extern` for doctests.
pub use self::rapport::crm::inputs;
pub use self::rapport::crm::types;
