//! Concurrent authentications of one bearer token share one database
//! lookup, and never an older one.
//!
//! A client with hundreds of requests in flight (a tenant's flood, or a busy
//! integration) queued hundreds of identical `api_keys` lookups in the
//! connection pool at once, and every other tenant's requests waited behind
//! them (the flood benchmark: the victim's p99 in hundreds of ms). Requests
//! of one token now wait for the *next* lookup of that token that starts
//! after they arrived, and take its answer: as fresh as a lookup of their
//! own (a key revoked before a request arrived is never accepted for it),
//! with at most one lookup per token in the pool at a time. Nothing is kept
//! once no request of the token is waiting: this is not a cache.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use crate::store::tenants::{Principal, hash_token};
use crate::store::{Store, StoreResult};

/// The last lookup of one token: when it started and what it found.
type Flight = tokio::sync::Mutex<Option<(Instant, Option<Principal>)>>;

/// Tokens with requests authenticating now, by token hash (never the token
/// itself). Process-wide: a token names one key of one database.
static FLIGHTS: LazyLock<Mutex<HashMap<String, Arc<Flight>>>> = LazyLock::new(Mutex::default);

fn flights() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Flight>>> {
    // A plain map of handles: still consistent after a panic elsewhere.
    FLIGHTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`Store::authenticate`], shared between the concurrent requests of one
/// token (see the module doc).
pub async fn authenticate(store: &Store, token: &str) -> StoreResult<Option<Principal>> {
    let arrived = Instant::now();
    let key = hash_token(token);
    let flight = flights().entry(key.clone()).or_default().clone();
    let result = {
        // tokio's mutex is fair: requests take their turn in arrival order.
        let mut last = flight.lock().await;
        match &*last {
            Some((started, principal)) if *started >= arrived => Ok(principal.clone()),
            _ => {
                let started = Instant::now();
                let found = store.authenticate(token).await;
                if let Ok(principal) = &found {
                    *last = Some((started, principal.clone()));
                }
                found
            }
        }
    };
    // Every handle is dropped under the map's lock, so the last request of
    // a token sees it unshared and removes it.
    let mut map = flights();
    drop(flight);
    if map.get(&key).is_some_and(|f| Arc::strong_count(f) == 1) {
        map.remove(&key);
    }
    result
}
