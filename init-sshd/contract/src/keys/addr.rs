//! Address patterns for `from="..."` (authorized_keys) and `source-address` (certificates).
//!
//! There is no DNS here (the server runs in any image, with no resolver we can trust), so
//! patterns are matched against the peer's IP address only, exactly like OpenSSH with its
//! default `UseDNS no`: a hostname pattern such as `*.example.com` simply never matches.
//! A *negated* hostname pattern would be a deny rule we cannot enforce, so it refuses the line.

use std::net::IpAddr;

/// One `from=` pattern list: OpenSSH `match_host_and_ip` semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrPatterns {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    negated: bool,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// An address or CIDR block; a bare address is a full-length prefix.
    Net(Net),
    /// `*`/`?` glob matched against the textual address, case-insensitive.
    Glob(String),
}

/// An address block with its host bits zero (checked when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parse `ADDR` or `ADDR/PREFIX`. Host bits set below the prefix are an error, like
    /// OpenSSH, because `10.1.2.3/8` is almost always a typo for something narrower.
    pub fn parse(text: &str) -> Result<Net, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let n: u8 = p
                    .parse()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?;
                n
            }
        };
        let net = Net { addr, prefix };
        if net.masked(addr) != bits(addr) {
            return Err(format!("{text:?} has host bits set below the prefix"));
        }
        Ok(net)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let keep = u32::from(self.prefix);
        if keep == 0 {
            return 0;
        }
        let mask = u128::MAX << (width - keep);
        let mask = if width == 32 {
            mask & 0xffff_ffff
        } else {
            mask
        };
        bits(ip) & mask
    }

    /// True when `ip` (canonicalised: IPv4-mapped IPv6 counts as IPv4) is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == bits(self.addr)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Characters that can appear in a glob over an IP address. Anything else is a hostname.
fn is_address_glob(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '*' | '?'))
}

impl AddrPatterns {
    /// Parse a comma-separated pattern list (`from="10.0.0.0/8,!10.0.0.1,192.168.*"`).
    pub fn parse(list: &str) -> Result<AddrPatterns, String> {
        let mut patterns = Vec::new();
        for raw in list.split(',') {
            let raw = raw.trim();
            let (negated, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            if body.is_empty() {
                return Err("from= has an empty pattern".to_string());
            }
            let kind = if body.contains('/') || body.parse::<IpAddr>().is_ok() {
                Kind::Net(Net::parse(body).map_err(|e| format!("from= {e}"))?)
            } else if is_address_glob(body) || !negated {
                Kind::Glob(body.to_ascii_lowercase())
            } else {
                return Err(format!(
                    "from= negated hostname pattern {raw:?} cannot be enforced without DNS"
                ));
            };
            patterns.push(Pattern { negated, kind });
        }
        Ok(AddrPatterns { patterns })
    }

    /// OpenSSH semantics: any matching negated pattern rejects; otherwise at least one
    /// positive pattern must match.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let text = ip.to_string();
        let mut positive = false;
        for p in &self.patterns {
            let hit = match &p.kind {
                Kind::Net(net) => net.contains(ip),
                Kind::Glob(g) => glob_match(g.as_bytes(), text.as_bytes()),
            };
            if hit && p.negated {
                return false;
            }
            positive |= hit;
        }
        positive
    }
}

/// Parse a certificate `source-address` list: addresses and CIDR blocks only, no negation.
pub fn parse_cidr_list(list: &str) -> Result<Vec<Net>, String> {
    list.split(',')
        .map(|s| Net::parse(s.trim()).map_err(|e| format!("source-address {e}")))
        .collect()
}

/// Host patterns compare ASCII case-insensitively, as OpenSSH's do.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    crate::wildcard::matches(pattern, text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"192.168.1.*", b"192.168.1.77"));
        assert!(!glob_match(b"192.168.1.*", b"192.168.10"));
        assert!(glob_match(b"10.0.0.?", b"10.0.0.5"));
        assert!(!glob_match(b"10.0.0.?", b"10.0.0.55"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"*.1", b"10.0.0.1"));
        assert!(glob_match(b"1*1*1", b"1011"));
        assert!(!glob_match(b"1*1*1", b"101"));
        assert!(glob_match(b"FE80::*", b"fe80::1"));
    }

    #[test]
    fn cidr_and_negation() {
        let p = AddrPatterns::parse("10.0.0.0/8,!10.9.9.9,192.168.1.*").unwrap();
        assert!(p.allows(ip("10.1.2.3")));
        assert!(!p.allows(ip("10.9.9.9")), "negated match rejects");
        assert!(p.allows(ip("192.168.1.200")));
        assert!(!p.allows(ip("172.16.0.1")), "no positive match rejects");
        // IPv4-mapped IPv6 peers (dual-stack listener) are treated as IPv4.
        assert!(p.allows(ip("::ffff:10.1.2.3")));
        assert!(!p.allows(ip("::ffff:10.9.9.9")));
    }

    #[test]
    fn negation_only_list_rejects_everyone() {
        let p = AddrPatterns::parse("!10.0.0.1").unwrap();
        assert!(!p.allows(ip("10.0.0.2")));
        assert!(!p.allows(ip("10.0.0.1")));
    }

    #[test]
    fn ipv6() {
        let p = AddrPatterns::parse("2001:db8::/32,::1").unwrap();
        assert!(p.allows(ip("2001:db8::5")));
        assert!(p.allows(ip("::1")));
        assert!(!p.allows(ip("2001:db9::5")));
        assert!(!p.allows(ip("127.0.0.1")));
        let all = AddrPatterns::parse("0.0.0.0/0").unwrap();
        assert!(all.allows(ip("8.8.8.8")));
        assert!(!all.allows(ip("2001:db8::1")));
    }

    #[test]
    fn hostnames_never_match_and_negated_hostnames_refuse() {
        let p = AddrPatterns::parse("*.example.com,127.0.0.1").unwrap();
        assert!(p.allows(ip("127.0.0.1")));
        assert!(!p.allows(ip("10.0.0.1")));
        assert!(AddrPatterns::parse("!evil.example.com,*").is_err());
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "10.0.0.0/33",
            "10.1.2.3/8",
            "10.0.0.0/x",
            "",
            "10.0.0.1,,10.0.0.2",
            "!",
            "::1/129",
        ] {
            assert!(AddrPatterns::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn cidr_list() {
        let nets = parse_cidr_list("10.0.0.0/8, 127.0.0.1").unwrap();
        assert!(nets.iter().any(|n| n.contains(ip("127.0.0.1"))));
        assert!(!nets.iter().any(|n| n.contains(ip("127.0.0.2"))));
        assert!(parse_cidr_list("10.0.0.*").is_err());
        assert!(parse_cidr_list("!10.0.0.1").is_err());
    }
}
