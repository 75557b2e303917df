//! `allowed_hosts` entries: which hosts a channel connector may reach. This
//! is the one definition of that security boundary: the manifest parses
//! entries with it, `rapport plugin run --allowed-host` too, and the
//! `outbound-http` and `outbound-smtp` capabilities match requests with it.
//!
//! Syntax: `host[:port]` or `*.domain[:port]`. Hosts are lower-case DNS
//! names (or dotted IPv4 literals); no scheme, path, user info or inner
//! wildcards, because each of those has been a way to smuggle a request to a
//! host the operator did not mean to allow. `*.example.org` matches any
//! subdomain (one or more labels) but not `example.org` itself, and needs at
//! least two labels after the star so `*.com` cannot be written. Without a
//! port the pattern allows only the protocol's default ports
//! ([`HTTP_PORTS`] by scheme, [`SMTP_PORTS`]), so `example.com` never opens
//! `example.com:22`.

use serde::{Serialize, Serializer};

/// The default port of each HTTP scheme: a pattern without a port allows
/// only the request's own scheme's port.
pub const HTTP_PORTS: [(&str, u16); 2] = [("http", 80), ("https", 443)];

/// Submission (587), implicit TLS (465) and relay (25): a pattern without a
/// port allows any of them.
pub const SMTP_PORTS: [u16; 3] = [25, 465, 587];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    /// True for `*.domain`.
    pub wildcard: bool,
    /// The host, or for wildcards the domain after `*.`; lower case.
    pub domain: String,
    pub port: Option<u16>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        if text.is_empty() {
            return Err("empty host pattern".into());
        }
        if text.contains("://") || text.contains('/') || text.contains('@') {
            return Err(format!(
                "{text:?} is not a host pattern: write only `host[:port]`, without scheme or path"
            ));
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{text:?}: port must be a number from 1 to 65535"))?;
                (host, Some(port))
            }
            None => (text, None),
        };
        let (wildcard, domain) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if domain.contains('*') {
            return Err(format!("{text:?}: a wildcard is only allowed as a leading `*.`"));
        }
        if domain.len() > 253 {
            return Err(format!("{text:?}: host name longer than 253 characters"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "{text:?}: invalid host name (lower-case labels of a-z, 0-9 and '-', separated by dots)"
                ));
            }
        }
        if wildcard && labels.len() < 2 {
            return Err(format!(
                "{text:?}: a wildcard needs at least two labels after `*.` (e.g. `*.example.com`)"
            ));
        }
        Ok(HostPattern {
            wildcard,
            domain: domain.to_string(),
            port,
        })
    }

    /// Whether a connection to `host` on `port` is allowed, where a pattern
    /// without a port allows any of `default_ports` (the protocol's). `host`
    /// is compared case-insensitively; a trailing dot (FQDN form) is ignored.
    pub fn matches(&self, host: &str, port: u16, default_ports: &[u16]) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => default_ports.contains(&port),
        };
        if !port_ok {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.domain.len() + 1
                && host.ends_with(&self.domain)
                && host.as_bytes()[host.len() - self.domain.len() - 1] == b'.'
        } else {
            host == self.domain
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for HostPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::parse(s)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let web = [80, 443];
        let p = HostPattern::parse("hooks.example.com").unwrap();
        assert!(p.matches("hooks.example.com", 443, &web));
        assert!(p.matches("HOOKS.example.com.", 80, &web));
        assert!(!p.matches("hooks.example.com", 8443, &web));
        assert!(!p.matches("hooks.example.com", 443, &[80]));
        assert!(!p.matches("hooks.example.com", 22, &SMTP_PORTS));
        assert!(p.matches("hooks.example.com", 587, &SMTP_PORTS));
        assert!(!p.matches("evil.hooks.example.com", 443, &web));
        assert!(!p.matches("hooks.example.com.evil.com", 443, &web));

        let w = HostPattern::parse("*.example.org:8443").unwrap();
        assert_eq!(w.to_string(), "*.example.org:8443");
        assert!(w.matches("a.example.org", 8443, &web));
        assert!(w.matches("a.b.example.org", 8443, &web));
        assert!(!w.matches("example.org", 8443, &web));
        assert!(!w.matches("badexample.org", 8443, &web));
        assert!(!w.matches("a.example.org", 443, &web));

        let ip = HostPattern::parse("127.0.0.1:8080").unwrap();
        assert!(ip.matches("127.0.0.1", 8080, &web));
        assert!(!ip.matches("127.0.0.1", 8081, &web));
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "",
            "https://x.com",
            "x.com/path",
            "user@x.com",
            "*.com",
            "a.*.com",
            "X.com",
            "x.com:0",
            "x.com:99999",
            "-x.com",
            "x..com",
            "*",
            "*.",
            "a.com:",
            " a.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
