//! The checks of a config that need the parts it configures: the JWT key
//! loads, the auth URL resolves, the push API's networks parse, the bus
//! subject prefix is valid. `config` checks ranges and contradictions on
//! its own; these sit here because `config` is the base every module uses
//! and must not depend on the modules above it.

use crate::config::Config;
use std::path::Path;

/// Reads, validates and checks the config at `path` (the server's start and
/// `--check-config` both use this).
pub fn load(path: &Path) -> Result<Config, String> {
    let config = Config::load(path)?;
    parts(&config)?;
    Ok(config)
}

/// Builds each configured part once and drops it, so a config that passes
/// here starts.
pub fn parts(config: &Config) -> Result<(), String> {
    crate::proto::jwt::Verifier::from_config(&config.auth)?;
    crate::proto::auth_url::AuthUrl::from_config(&config.auth)?;
    crate::api::access::Access::new(&config.http.push_bearer_token, &config.http.push_allowed_networks)
        .map_err(|e| format!("http.push_allowed_networks: {e}"))?;
    if !crate::route::subject::valid_prefix(&config.cluster.subject_prefix) {
        return Err(
            "bad config: cluster.subject_prefix must be dot-separated tokens of letters, digits, - and _".into()
        );
    }
    Ok(())
}
