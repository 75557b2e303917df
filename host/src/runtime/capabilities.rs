//! Host capabilities: one module per `rapport:crm` host interface, each
//! linked into a plugin's linker only when the manifest grants it (deny by
//! default: an ungranted interface is simply absent, and `imports::check`
//! refuses the component before linking with a precise error).
//!
//! Every implementation reads the tenant from the store's host state and
//! passes it to [`super::services::HostServices`]; none takes a tenant,
//! or anything resembling one, from the guest.

pub mod catalog;
pub mod config;
pub mod customers;
pub mod interactions;
pub mod kv;
pub mod log;
pub mod loyalty;
pub mod outbound_http;
pub mod outbound_smtp;

use wasmtime::component::{HasSelf, Linker};

use super::Capability;
use super::contract_v0_1_0::types::HostError;
use super::contract_v0_1_0::{inputs, types};
use super::host_state::HostState;
use super::services::ServiceError;

/// Largest page a list function returns, whatever the guest asks.
pub(crate) const MAX_PAGE: u32 = 500;

/// Links one granted capability.
pub(crate) fn link(linker: &mut Linker<HostState>, capability: Capability) -> wasmtime::Result<()> {
    match capability {
        Capability::Customers => customers::add_to_linker(linker),
        Capability::Interactions => interactions::add_to_linker(linker),
        Capability::Loyalty => loyalty::add_to_linker(linker),
        Capability::Catalog => catalog::add_to_linker(linker),
        Capability::Kv => kv::add_to_linker(linker),
        Capability::Log => log::add_to_linker(linker),
        Capability::Config => config::add_to_linker(linker),
        Capability::OutboundHttp => outbound_http::add_to_linker(linker),
        Capability::OutboundSmtp => outbound_smtp::add_to_linker(linker),
    }
}

/// The type-only interfaces (`types`, `inputs`) carry no capability: a
/// component imports them whenever it uses the contract's records.
pub(crate) fn link_type_interfaces(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    inputs::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

impl types::Host for HostState {}
impl inputs::Host for HostState {}

/// Page sizes the services see: at least 1, at most [`MAX_PAGE`].
pub(crate) fn page_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}

/// Every data-access function has a `host-error` channel (contract 0.1.0),
/// so a service failure reaches the guest as an error it can handle, never
/// as a trap or as a false "not found".
pub(crate) fn host_error(e: ServiceError) -> HostError {
    match e {
        ServiceError::InvalidArgument(m) => HostError::InvalidArgument(m),
        ServiceError::QuotaExceeded(m) => HostError::QuotaExceeded(m),
        ServiceError::Unavailable(m) => HostError::Unavailable(m),
    }
}
