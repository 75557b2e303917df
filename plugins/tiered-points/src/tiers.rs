//! Joining the configured tiers (thresholds, rates) with the host's tiers
//! (ids, ranks) by name, and picking the tier a rolling spend qualifies for.

use crate::config::{Config, TierRule, rate_milli};
use crate::{Error, Tier};

/// A configured tier with its host id.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedTier<'a> {
    pub rule: &'a TierRule,
    pub host: &'a Tier,
    pub rate_milli: i64,
}

/// Every configured tier matched to the host tier of the same name, in
/// ascending rank. A configured tier the host does not know, or whose rank
/// differs from the host's, is a configuration error: tier changes need the
/// host id, and reward rules compare host ranks.
pub(crate) fn resolve<'a>(config: &'a Config, host_tiers: &'a [Tier]) -> Result<Vec<ResolvedTier<'a>>, Error> {
    let mut resolved = Vec::with_capacity(config.tiers.len());
    for rule in &config.tiers {
        let host = host_tiers.iter().find(|t| t.name == rule.name).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "tier {:?} is configured but the host has no tier of that name",
                rule.name
            ))
        })?;
        if host.rank != rule.rank {
            return Err(Error::InvalidConfig(format!(
                "tier {:?} has rank {} in the configuration but {} in the host",
                rule.name, rule.rank, host.rank
            )));
        }
        resolved.push(ResolvedTier {
            rule,
            host,
            rate_milli: rate_milli(rule.points_per_unit),
        });
    }
    resolved.sort_by_key(|t| t.rule.rank);
    Ok(resolved)
}

/// The highest tier whose threshold the spend reaches, if any.
pub(crate) fn qualifying<'r, 'a>(resolved: &'r [ResolvedTier<'a>], spend_minor: i64) -> Option<&'r ResolvedTier<'a>> {
    resolved.iter().rev().find(|t| spend_minor >= t.rule.min_spend_minor)
}
