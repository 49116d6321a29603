//! Which addresses `fetch_url` may connect to: public unicast ones only, unless its policy
//! allows more. A URL a model chose must not reach the machine's own services (loopback), the
//! local network (private ranges, link-local, ULA), a cloud's metadata service
//! (169.254.169.254), a carrier's NAT (100.64/10) or anything that is not one host
//! (multicast, broadcast, unspecified); IPv6 forms that carry an IPv4 address (mapped,
//! compatible, NAT64, 6to4, Teredo) are judged by that address or refused.
//!
//! ```
//! use belt_tools::web::blocked_reason;
//! assert_eq!(blocked_reason("127.0.0.1".parse().unwrap()), Some("loopback"));
//! assert_eq!(blocked_reason("1.1.1.1".parse().unwrap()), None);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public unicast address (a word for messages), or `None` when it is.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local (cloud metadata)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    Some(match s[0] {
        0 if s[1..5] == [0; 4] && s[5] == 0xffff => "IPv4-mapped",
        0 if s[1..6] == [0; 5] => "IPv4-compatible (deprecated)",
        0x64 if s[1] == 0xff9b && s[2..6] == [0; 4] => return blocked_v4(embedded(s[6], s[7])),
        0x2002 => return blocked_v4(embedded(s[1], s[2])),
        0x2001 if s[1] == 0 => "Teredo",
        0x2001 if s[1] == 0xdb8 => "documentation",
        x if x & 0xfe00 == 0xfc00 => "unique local (private)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local (deprecated)",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(ip: &str) -> Option<&'static str> {
        blocked_reason(ip.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_blocked() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "198.18.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert!(reason(ip).is_some(), "{ip} should be blocked");
        }
        assert_eq!(reason("::ffff:127.0.0.1"), Some("IPv4-mapped"));
        assert_eq!(reason("64:ff9b::7f00:1"), Some("loopback"));
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert_eq!(reason(ip), None, "{ip} should pass");
        }
    }
}
