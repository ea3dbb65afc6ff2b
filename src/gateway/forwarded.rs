//! The real client address behind a reverse proxy. Forwarding headers are
//! believed only when the direct peer is a configured trusted proxy;
//! otherwise anyone could claim any address.

use http::HeaderMap;
use std::net::IpAddr;

/// An address block: `10.0.0.0/8`, `127.0.0.1`, `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// # Errors
    /// Not an address or a prefix length out of range.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or(format!("{text:?}: bad prefix"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(ip)) => {
                mask_eq(u128::from(u32::from(n)), u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(ip)) => mask_eq(u128::from(n), u128::from(ip), 128, self.prefix),
            // An IPv4 peer seen as ::ffff:a.b.c.d.
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            _ => false,
        }
    }
}

fn mask_eq(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let shift = bits - u32::from(prefix);
    if shift >= bits {
        return true;
    }
    (a >> shift) == (b >> shift)
}

/// The client address for a connection from `peer`: when `peer` is trusted,
/// the rightmost X-Forwarded-For entry that is not itself a trusted proxy
/// (entries to its left could be forged by the client), else X-Real-IP.
/// `None` means "use the socket peer".
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[Cidr]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return None;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    if let Some(ip) = forwarded.iter().rev().find(|ip| !is_trusted(**ip)) {
        return Some(*ip);
    }
    headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::test_headers as headers;

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn forwarded_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7"), ("x-real-ip", "192.0.2.1")]);
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.50".parse().unwrap();
        assert_eq!(client_ip(&h, stranger, &trusted), None, "untrusted peers cannot claim addresses");
        // Rightmost untrusted entry: the left one could be forged by the client.
        assert_eq!(client_ip(&h, proxy, &trusted), Some("198.51.100.7".parse().unwrap()));
        let chain = headers(&[("x-forwarded-for", "198.51.100.7, 10.0.0.9")]);
        assert_eq!(client_ip(&chain, proxy, &trusted), Some("198.51.100.7".parse().unwrap()), "skips inner proxies");
        let real = headers(&[("x-real-ip", "192.0.2.1")]);
        assert_eq!(client_ip(&real, proxy, &trusted), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(client_ip(&headers(&[]), proxy, &trusted), None);
    }
}
