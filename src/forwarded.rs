//! The client a request comes from, behind reverse proxies: for the log and `allow_from`.

use std::net::IpAddr;

use http::HeaderMap;

use crate::allow::Nets;

/// The address a request is taken to come from when a trusted proxy forwarded it with a hop
/// that cannot be read: no address is believed, and this one is in no list but "everyone".
pub const UNKNOWN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The client a request comes from: its peer, or, when the peer is a trusted proxy, the
/// nearest hop before it that is not a trusted proxy. Named in the log and checked against
/// `allow_from` and `observe_from` (which add to the signatures, never replace them).
///
/// `Forwarded` (RFC 7239) is read when the request has one, else `X-Forwarded-For`: a proxy
/// that writes `Forwarded` passes a client's own `X-Forwarded-For` through untouched, so that
/// one is only the client's word. (A proxy that writes `X-Forwarded-For` drops a client's
/// `Forwarded`: the snippets in contrib/ do.) The hops are read from the nearest back; one that
/// cannot be read ends the walk with [`UNKNOWN`]: the hop before it is the word of whoever wrote
/// that unreadable one, and is not believed.
pub fn client(peer: IpAddr, headers: &HeaderMap, trusted: &Nets) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    let forwarded = headers.get_all("forwarded");
    if forwarded.iter().next().is_some() {
        for value in forwarded.iter() {
            let Ok(value) = value.to_str() else {
                hops.push(None);
                continue;
            };
            for element in value.split(',') {
                let fors: Vec<&str> = element
                    .split(';')
                    .filter_map(|p| {
                        let (key, value) = p.trim().split_once('=')?;
                        key.trim().eq_ignore_ascii_case("for").then_some(value.trim())
                    })
                    .collect();
                // An element without `for=` says nothing of its client: no hop is known.
                match fors.as_slice() {
                    [one] => hops.push(parse_hop(one.trim_matches('"'))),
                    _ => hops.push(None),
                }
            }
        }
    } else {
        for value in headers.get_all("x-forwarded-for").iter() {
            let Ok(value) = value.to_str() else {
                hops.push(None);
                continue;
            };
            hops.extend(value.split(',').map(|a| parse_hop(a.trim())));
        }
    }
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if trusted.contains(ip) => continue,
            Some(ip) => return ip,
            None => return UNKNOWN,
        }
    }
    peer
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
        // An unreadable hop is not skipped: the one before it is not believed.
        let junk = headers(&[("x-forwarded-for", "203.0.113.9, not an address, 10.0.0.5")]);
        assert_eq!(client(ip("127.0.0.1"), &junk, &trusted), UNKNOWN);
        let junk = headers(&[("forwarded", "for=203.0.113.9, for=unknown")]);
        assert_eq!(client(ip("127.0.0.1"), &junk, &trusted), UNKNOWN);
        let junk = headers(&[("forwarded", "for=203.0.113.9, proto=https")]);
        assert_eq!(client(ip("127.0.0.1"), &junk, &trusted), UNKNOWN);
        // The proxy writes Forwarded: a client's own X-Forwarded-For is its word, not read.
        let both =
            headers(&[("x-forwarded-for", "192.30.252.1"), ("forwarded", "for=198.51.100.7;proto=https")]);
        assert_eq!(client(ip("127.0.0.1"), &both, &trusted), ip("198.51.100.7"));
        let upper = headers(&[("forwarded", "For=198.51.100.8")]);
        assert_eq!(client(ip("127.0.0.1"), &upper, &trusted), ip("198.51.100.8"));
    }
}
