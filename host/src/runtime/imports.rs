//! Deny by default, before linking: every import of a component must be a
//! granted `rapport:crm` capability of the plugin's contract version, a
//! type-only contract interface, or one of the WASI 0.2 interfaces that
//! Rust's std imports (and which the empty WASI context renders harmless).
//! Anything else (`wasi:http`, an unknown package, another contract
//! version) is refused by name.
//!
//! `wasi:sockets/*` is accepted because std links it as soon as a guest
//! touches `std::net`; the context denies every TCP/UDP address and name
//! lookup, so a connect fails at run time (tests/it/runtime_hostile.rs proves
//! it with `hostile-wasi-escape`).

use wasmtime::Engine;
use wasmtime::component::Component;

use super::contract_v0_1_0::{PACKAGE_PREFIX, VERSION_SUFFIX};
use super::{Capability, LoadError, PluginDefinition, PluginKind};

/// WASI 0.2 interfaces a std guest may import. Calls hit an empty context:
/// no preopens, no env, closed stdin, captured output, no network.
const WASI_ALLOWED: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Checks the component's imports against the definition's grants.
pub(crate) fn check(engine: &Engine, component: &Component, def: &PluginDefinition) -> Result<(), LoadError> {
    if def.kind != PluginKind::ChannelConnector
        && let Some(&capability) = def.capabilities.iter().find(|c| c.connector_only())
    {
        return Err(LoadError::CapabilityNotForKind {
            plugin: def.id.clone(),
            capability,
            kind: def.kind,
        });
    }
    for (name, _) in component.component_type().imports(engine) {
        check_one(name, def)?;
    }
    Ok(())
}

fn check_one(import: &str, def: &PluginDefinition) -> Result<(), LoadError> {
    let refuse = || LoadError::ImportNotAllowed {
        plugin: def.id.clone(),
        import: import.to_owned(),
    };
    if let Some(rest) = import.strip_prefix(PACKAGE_PREFIX) {
        let interface = rest.strip_suffix(VERSION_SUFFIX).ok_or_else(refuse)?;
        if interface == "types" || interface == "inputs" {
            return Ok(());
        }
        let capability: Capability = interface.parse().map_err(|_| refuse())?;
        if !def.capabilities.contains(&capability) {
            return Err(LoadError::ImportNotGranted {
                plugin: def.id.clone(),
                import: import.to_owned(),
                capability,
            });
        }
        return Ok(());
    }
    let (interface, version) = import.split_once('@').ok_or_else(refuse)?;
    if WASI_ALLOWED.contains(&interface) && version.starts_with("0.2.") {
        return Ok(());
    }
    Err(refuse())
}
