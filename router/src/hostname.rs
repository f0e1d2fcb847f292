//! From the server address in a handshake to a [`RequestedHost`].
//!
//! Clients send what the player typed, but not always only that: Forge appends
//! `\0FML\0` (`\0FML2\0`, `\0FML3\0`), some proxies append more `\0`-separated data, a
//! fully qualified name may end with a dot, and case is the player's. The router keeps
//! the part before the first `\0`, drops one trailing dot, lowercases it, and checks it
//! is a DNS name (labels of letters, digits and hyphens, at most 253 bytes).

use crate::backend::RequestedHost;

/// The longest DNS name, in bytes.
pub const HOSTNAME_BYTES_MAX: usize = 253;
/// The longest DNS label, in bytes.
pub const LABEL_BYTES_MAX: usize = 63;

/// Why a handshake's address routes nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("the address is empty")]
    Empty,
    #[error("the address {0:?} is not a DNS name")]
    NotADnsName(String),
}

/// The handshake's address without what clients append, lowercased.
pub fn normalize(raw: &str) -> Result<String, HostnameError> {
    let typed = raw.split('\0').next().unwrap_or_default();
    let typed = typed.strip_suffix('.').unwrap_or(typed);
    if typed.is_empty() {
        return Err(HostnameError::Empty);
    }
    let lower = typed.to_ascii_lowercase();
    if !is_dns_name(&lower) {
        return Err(HostnameError::NotADnsName(lower));
    }
    Ok(lower)
}

fn is_dns_name(name: &str) -> bool {
    name.len() <= HOSTNAME_BYTES_MAX
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= LABEL_BYTES_MAX
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

/// What a normalised hostname asks for: `<name>.<domain>` (one label under the domain)
/// is a server name, anything else a custom hostname. `domain` is lowercase without a
/// trailing dot.
pub fn requested_host(hostname: &str, domain: &str) -> RequestedHost {
    if !domain.is_empty()
        && let Some(prefix) = hostname.strip_suffix(domain)
        && let Some(name) = prefix.strip_suffix('.')
        && !name.is_empty()
        && !name.contains('.')
    {
        return RequestedHost::Name(name.to_owned());
    }
    RequestedHost::Custom(hostname.to_owned())
}

/// Normalises `raw` and splits it against `domain`.
pub fn parse(raw: &str, domain: &str) -> Result<RequestedHost, HostnameError> {
    Ok(requested_host(&normalize(raw)?, domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "play.example.com";

    #[test]
    fn a_name_under_the_domain_is_a_server_name_whatever_the_client_appends() {
        for raw in [
            "alpha.play.example.com",
            "Alpha.PLAY.example.com",
            "alpha.play.example.com.",
            "alpha.play.example.com\0FML\0",
            "alpha.play.example.com\0FML2\0",
            "alpha.play.example.com.\0FML3\0\0extra",
        ] {
            assert_eq!(parse(raw, DOMAIN), Ok(RequestedHost::Name("alpha".into())), "{raw:?}");
        }
    }

    #[test]
    fn other_names_are_custom_hostnames() {
        assert_eq!(
            parse("mc.alice.org", DOMAIN),
            Ok(RequestedHost::Custom("mc.alice.org".into()))
        );
        // Two labels under the domain, the domain itself and a suffix match that is
        // not a label boundary are not server names.
        for raw in ["a.b.play.example.com", "play.example.com", "xplay.example.com"] {
            assert_eq!(parse(raw, DOMAIN), Ok(RequestedHost::Custom(raw.into())), "{raw:?}");
        }
        assert_eq!(
            parse("127.0.0.1", DOMAIN),
            Ok(RequestedHost::Custom("127.0.0.1".into()))
        );
    }

    #[test]
    fn addresses_that_are_not_dns_names_are_refused() {
        assert_eq!(parse("", DOMAIN), Err(HostnameError::Empty));
        assert_eq!(parse("\0FML\0", DOMAIN), Err(HostnameError::Empty));
        assert_eq!(parse(".", DOMAIN), Err(HostnameError::Empty));
        for raw in ["a..b", "-a.b", "a b.c", "a_b.c", "ü.example", "a.b:25565"] {
            assert!(
                matches!(parse(raw, DOMAIN), Err(HostnameError::NotADnsName(_))),
                "{raw:?}"
            );
        }
        let long = format!("{}.{DOMAIN}", "a".repeat(64));
        assert!(parse(&long, DOMAIN).is_err());
        let too_long = ["abc"; 64].join(".");
        assert!(too_long.len() > HOSTNAME_BYTES_MAX);
        assert!(parse(&too_long, DOMAIN).is_err());
    }
}
