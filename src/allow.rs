//! Networks of addresses, as `allow_from:` and `trusted_proxies:` list them: `192.0.2.0/24`,
//! `2001:db8::/32`, or a single address. An IPv4 client seen through an IPv6 socket
//! (`::ffff:192.0.2.7`) is the IPv4 address it is.

use std::net::IpAddr;

use ipnet::IpNet;

/// One network, parsed from a CIDR or a single address; an IPv4-mapped IPv6 address is the
/// IPv4 one it maps.
fn parse_net(text: &str) -> Result<IpNet, String> {
    let not_a_net = || format!("\"{text}\" is not an address or a network (192.0.2.0/24, 2001:db8::/32)");
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr = addr.trim().parse::<IpAddr>().map_err(|_| not_a_net())?.to_canonical();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("\"{text}\": the prefix length must be 0 to {max}"))?,
    };
    IpNet::new(addr, prefix).map_err(|_| not_a_net())
}

/// A list of networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nets(Vec<IpNet>);

impl Nets {
    /// Parses every item; `Err` holds one message per item that is not a network.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Nets, Vec<String>> {
        let mut nets = Vec::new();
        let mut problems = Vec::new();
        for item in items {
            match parse_net(item.as_ref()) {
                Ok(n) => nets.push(n),
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(Nets(nets))
        } else {
            Err(problems)
        }
    }

    /// The loopback addresses, IPv4 and IPv6.
    pub fn loopback() -> Nets {
        Nets(vec![
            IpAddr::from(std::net::Ipv4Addr::LOCALHOST).into(),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST).into(),
        ])
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let nets = Nets::parse(&["192.30.252.0/22", "2a0a:a440::/29", "10.0.0.7", "::1"]).unwrap();
        for (ip, want) in [
            ("192.30.252.1", true),
            ("192.30.255.255", true),
            ("192.30.251.255", false),
            ("192.31.0.1", false),
            ("::ffff:192.30.253.9", true),
            ("2a0a:a440::1", true),
            ("2a0a:a448::1", false),
            ("10.0.0.7", true),
            ("10.0.0.8", false),
            ("::1", true),
            ("127.0.0.1", false),
        ] {
            assert_eq!(nets.contains(ip.parse().unwrap()), want, "{ip}");
        }
        let everyone = Nets::parse(&["0.0.0.0/0", "::/0"]).unwrap();
        assert!(
            everyone.contains("203.0.113.1".parse().unwrap())
                && everyone.contains("2001:db8::1".parse().unwrap())
        );
        let problems = Nets::parse(&["10.0.0.0/33", "example.com", "::/129", "10.0.0.0/8"]).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("0 to 32") && problems[1].contains("not an address"));
    }
}
