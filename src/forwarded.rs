//! The client a request comes from, behind reverse proxies: for the log and `allow_from`.

use std::net::IpAddr;

use http::HeaderMap;

use crate::allow::Nets;

/// The client a request comes from: its peer, or, when the peer is a trusted proxy, the
/// nearest address before it in `X-Forwarded-For` (or `Forwarded: for=`) that is not a trusted
/// proxy. Named in the log and checked against `allow_from` (which adds to the signatures,
/// never replaces them).
pub fn client(peer: IpAddr, headers: &HeaderMap, trusted: &Nets) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
        hops.extend(value.split(',').filter_map(|a| parse_hop(a.trim())));
    }
    if hops.is_empty() {
        for value in headers.get_all("forwarded").iter().filter_map(|v| v.to_str().ok()) {
            for element in value.split(',') {
                let fors = element
                    .split(';')
                    .filter_map(|p| p.trim().strip_prefix("for=").or(p.trim().strip_prefix("For=")));
                hops.extend(fors.filter_map(|a| parse_hop(a.trim_matches('"'))));
            }
        }
    }
    hops.into_iter().rev().find(|hop| !trusted.contains(*hop)).unwrap_or(peer)
}

/// An address as proxies write it: `203.0.113.9`, `[2001:db8::1]:4711`, `198.51.100.2:80`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[').and_then(|t| t.split(']').next()).and_then(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_behind_trusted_proxies() {
        let trusted = Nets::parse(&["127.0.0.1", "10.0.0.0/24"]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            h
        };
        let xff = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(client(ip("127.0.0.1"), &xff, &trusted), ip("203.0.113.9"));
        // From an untrusted peer the header is the sender's word: ignored.
        assert_eq!(client(ip("192.0.2.1"), &xff, &trusted), ip("192.0.2.1"));
        let fwd = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(client(ip("127.0.0.1"), &fwd, &trusted), ip("2001:db8::1"));
        assert_eq!(client(ip("127.0.0.1"), &HeaderMap::new(), &trusted), ip("127.0.0.1"));
        let junk = headers(&[("x-forwarded-for", "not an address, 10.0.0.5")]);
        assert_eq!(client(ip("127.0.0.1"), &junk, &trusted), ip("127.0.0.1"));
    }
}
