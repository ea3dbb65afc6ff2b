//! The real client address behind a reverse proxy. Forwarding headers are
//! believed only when the direct peer is a configured trusted proxy;
//! otherwise anyone could claim any address.

use http::HeaderMap;
use std::net::IpAddr;

use crate::config::Cidr;

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
