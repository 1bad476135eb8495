//! Who a call comes from: the peer's address, or, when the peer is a proxy
//! we trust, the client address it forwarded in `x-forwarded-for`.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::atomic::{AtomicBool, Ordering},
};

use ipnet::IpNet;
use tonic::metadata::MetadataMap;

/// The networks whose peers may say, in `x-forwarded-for`, whom they
/// forward for. Empty by default: then the header is never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts the peers within `networks`.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client's address: the peer's, unless the peer is trusted; then
    /// the rightmost address of `x-forwarded-for` that is not itself a
    /// trusted proxy (the leftmost when all of them are). Each proxy
    /// appends the address it saw, so everything left of the first
    /// untrusted entry could have been written by the client itself.
    pub fn client_address(
        &self,
        peer: Option<SocketAddr>,
        metadata: &MetadataMap,
    ) -> Option<IpAddr> {
        let peer = peer.map(|addr| addr.ip().to_canonical())?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        match self.forwarded_for(metadata) {
            Ok(Some(client)) => Some(client),
            Ok(None) => Some(peer),
            Err(Malformed) => {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        proxy = %peer,
                        "a trusted proxy sent a malformed x-forwarded-for; counting the \
                         proxy's own address instead (logged once)"
                    );
                }
                Some(peer)
            }
        }
    }

    /// The forwarded client, `None` without the header. All of the
    /// header's lines are read, in order, as one list.
    fn forwarded_for(&self, metadata: &MetadataMap) -> Result<Option<IpAddr>, Malformed> {
        let mut hops = Vec::new();
        for value in metadata.get_all("x-forwarded-for") {
            let text = value.to_str().map_err(|_| Malformed)?;
            for entry in text.split(',') {
                hops.push(forwarded_address(entry.trim())?);
            }
        }
        let leftmost = hops.first().copied();
        Ok(hops
            .into_iter()
            .rev()
            .find(|&hop| !self.trusts(hop))
            .or(leftmost))
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of networks (`10.0.0.0/8`) or addresses
    /// (`192.0.2.7`, a network of one); empty trusts none.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        raw.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .map(|net| net.trunc())
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an address or a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// An `x-forwarded-for` entry that is not an address.
#[derive(Debug)]
struct Malformed;

/// One entry: an address, with a port as some proxies write it
/// (`192.0.2.7:5120`, `[2001:db8::1]:443`) or IPv6 in brackets.
fn forwarded_address(entry: &str) -> Result<IpAddr, Malformed> {
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(address.to_canonical());
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Ok(address.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|address| address.to_canonical())
        .ok_or(Malformed)
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn metadata(headers: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for header in headers {
            map.append("x-forwarded-for", MetadataValue::try_from(*header).unwrap());
        }
        map
    }

    fn client(proxies: &str, peer: &str, headers: &[&str]) -> Option<String> {
        let proxies: TrustedProxies = proxies.parse().unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        proxies
            .client_address(Some(peer), &metadata(headers))
            .map(|address| address.to_string())
    }

    #[test]
    fn an_untrusted_peers_header_is_ignored() {
        let seen = client("", "192.0.2.1:4000", &["203.0.113.9"]);
        assert_eq!(seen.as_deref(), Some("192.0.2.1"));
        let seen = client("10.0.0.0/8", "192.0.2.1:4000", &["203.0.113.9"]);
        assert_eq!(seen.as_deref(), Some("192.0.2.1"));
    }

    #[test]
    fn a_trusted_peer_names_the_rightmost_untrusted_hop() {
        let proxies = "10.0.0.0/8";
        let seen = client(proxies, "10.0.0.5:4000", &["203.0.113.9"]);
        assert_eq!(seen.as_deref(), Some("203.0.113.9"));
        // The client wrote 198.51.100.1 itself; the proxy appended what it
        // saw, and an inner proxy its own address.
        let seen = client(
            proxies,
            "10.0.0.5:4000",
            &["198.51.100.1, 203.0.113.9, 10.1.2.3"],
        );
        assert_eq!(seen.as_deref(), Some("203.0.113.9"));
        // Several header lines are one list, in order.
        let seen = client(proxies, "10.0.0.5:4000", &["198.51.100.1", "203.0.113.9"]);
        assert_eq!(seen.as_deref(), Some("203.0.113.9"));
        // Only proxies: the leftmost is the client.
        let seen = client(proxies, "10.0.0.5:4000", &["10.9.9.9, 10.1.2.3"]);
        assert_eq!(seen.as_deref(), Some("10.9.9.9"));
        // No header: the proxy itself.
        let seen = client(proxies, "10.0.0.5:4000", &[]);
        assert_eq!(seen.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_read() {
        let proxies = "127.0.0.1, ::1";
        let seen = client(proxies, "127.0.0.1:4000", &["203.0.113.9:5120"]);
        assert_eq!(seen.as_deref(), Some("203.0.113.9"));
        let seen = client(proxies, "[::1]:4000", &["[2001:db8::7]:443"]);
        assert_eq!(seen.as_deref(), Some("2001:db8::7"));
        let seen = client(proxies, "[::ffff:127.0.0.1]:4000", &["[2001:db8::7]"]);
        assert_eq!(seen.as_deref(), Some("2001:db8::7"));
    }

    #[test]
    fn a_malformed_header_counts_the_proxy() {
        let proxies = "10.0.0.0/8";
        for bad in ["unknown", "203.0.113.9, ", "203.0.113.9;evil", "300.1.1.1"] {
            let seen = client(proxies, "10.0.0.5:4000", &[bad]);
            assert_eq!(seen.as_deref(), Some("10.0.0.5"), "{bad:?}");
        }
    }

    #[test]
    fn the_list_parses_networks_and_single_addresses() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.0.2.7,2001:db8::/32".parse().unwrap();
        assert_eq!(proxies.to_string(), "10.0.0.0/8,192.0.2.7/32,2001:db8::/32");
        let host_bits: TrustedProxies = "10.1.2.3/8".parse().unwrap();
        assert_eq!(host_bits.to_string(), "10.0.0.0/8");
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.internal".parse::<TrustedProxies>().is_err());
    }
}
