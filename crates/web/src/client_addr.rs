//! The client's address, behind trusted reverse proxies.
//!
//! The TCP peer is the client unless it is a proxy we were told to trust.
//! Only then is the forwarding header read, right to left (each proxy appends
//! the address it saw), skipping further trusted hops: the first address that
//! is not a trusted proxy is the client. Anything left of it was written by
//! the client itself and is never believed.
//!
//! A malformed header falls back to the peer address: a trusted proxy that
//! writes nonsense is a misconfiguration, and the peer is the one address we
//! know for certain.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

/// The address of the client that sent the request (see the module docs).
/// In router tests without a socket (`oneshot`), the peer is `127.0.0.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// A CIDR block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a
/// block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a proxy setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("invalid address in trusted proxy {0:?}")]
    Address(String),
    #[error("invalid prefix length in trusted proxy {0:?}")]
    Prefix(String),
    #[error("trusted proxy {0:?} has bits set after its prefix")]
    HostBits(String),
    #[error("unknown forwarding header {0:?} (expected \"x-forwarded-for\" or \"forwarded\")")]
    Header(String),
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = ProxyConfigError;

    fn from_str(s: &str) -> Result<IpNet, ProxyConfigError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| ProxyConfigError::Address(s.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| ProxyConfigError::Prefix(s.to_owned()))?,
        };
        let net = IpNet { addr, prefix };
        // `10.1.2.3/8` is almost always a typo for `10.1.2.3/32` or `10.0.0.0/8`.
        if !is_network_address(net) {
            return Err(ProxyConfigError::HostBits(s.to_owned()));
        }
        Ok(net)
    }
}

fn is_network_address(net: IpNet) -> bool {
    match net.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix))
                .unwrap_or(0);
            u32::from(a) & !mask == 0
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix))
                .unwrap_or(0);
            u128::from(a) & !mask == 0
        }
    }
}

/// Which header trusted proxies write the client address into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl FromStr for ForwardedHeader {
    type Err = ProxyConfigError;

    fn from_str(s: &str) -> Result<ForwardedHeader, ProxyConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            _ => Err(ProxyConfigError::Header(s.to_owned())),
        }
    }
}

/// The reverse proxies whose forwarding header is believed.
/// `Default` trusts nobody: the TCP peer is always the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Parses CIDR blocks (IPv4 and IPv6).
    pub fn new<S: AsRef<str>>(
        cidrs: &[S],
        header: ForwardedHeader,
    ) -> Result<TrustedProxies, ProxyConfigError> {
        let nets = cidrs
            .iter()
            .map(|c| c.as_ref().parse())
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(TrustedProxies { nets, header })
    }

    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client's address given the TCP peer and the request headers.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let Some(hops) = self.hops(headers) else {
            return peer;
        };
        let mut leftmost = peer;
        for hop in hops.iter().rev() {
            let hop = hop.to_canonical();
            if !self.is_trusted(hop) {
                return hop;
            }
            leftmost = hop;
        }
        // Every hop is a trusted proxy: the request began inside our own network.
        leftmost
    }

    /// The addresses in the forwarding header, left to right; `None` when it
    /// is absent or any part of it is malformed.
    fn hops(&self, headers: &HeaderMap) -> Option<Vec<IpAddr>> {
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let mut hops = Vec::new();
        // Several header lines form one list, in order (RFC 9110 §5.3).
        for value in headers.get_all(name) {
            let value = value.to_str().ok()?;
            match self.header {
                ForwardedHeader::XForwardedFor => {
                    for part in value.split(',') {
                        hops.push(parse_node(part.trim())?);
                    }
                }
                ForwardedHeader::Forwarded => {
                    for element in split_unquoted(value, ',') {
                        hops.push(parse_forwarded_element(element)?);
                    }
                }
            }
        }
        if hops.is_empty() { None } else { Some(hops) }
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// One element of RFC 7239 `Forwarded`: `for=…;proto=…;by=…`. Only `for` is
/// read; obfuscated identifiers and `unknown` count as malformed, since they
/// name no address we could act on.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_unquoted(element, ';') {
        let (k, v) = pair.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(rest) => rest.strip_suffix('"')?,
                None => v,
            };
            found = Some(parse_node(v)?);
        }
    }
    found
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(s.get(start..i).unwrap_or_default());
            start = i + c.len_utf8();
        }
    }
    parts.push(s.get(start..).unwrap_or_default());
    parts
}

impl<S> FromRequestParts<S> for ClientAddr
where
    Arc<TrustedProxies>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ClientAddr, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |ci| ci.0.ip());
        let proxies = Arc::<TrustedProxies>::from_ref(state);
        Ok(ClientAddr(proxies.client_addr(peer, &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use axum::http::HeaderValue;

    fn proxies(cidrs: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(cidrs, header).unwrap()
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn check_xff(trusted: &[&str], peer: &str, xff: &[&str], expect: &str) {
        let p = proxies(trusted, ForwardedHeader::XForwardedFor);
        let got = p.client_addr(ip(peer), &headers("x-forwarded-for", xff));
        assert_eq!(got, ip(expect), "peer {peer}, x-forwarded-for {xff:?}");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        check_xff(
            &["10.0.0.0/8"],
            "203.0.113.9",
            &["198.51.100.1"],
            "203.0.113.9",
        );
        check_xff(&[], "203.0.113.9", &["10.0.0.1"], "203.0.113.9");
        let p = TrustedProxies::default();
        assert_eq!(
            p.client_addr(ip("192.0.2.7"), &headers("x-forwarded-for", &["1.2.3.4"])),
            ip("192.0.2.7")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_client() {
        check_xff(
            &["10.0.0.0/8"],
            "10.0.0.5",
            &["198.51.100.1"],
            "198.51.100.1",
        );
        // Without a header the proxy itself is the client.
        check_xff(&["10.0.0.0/8"], "10.0.0.5", &[], "10.0.0.5");
    }

    #[test]
    fn spoofed_entries_left_of_the_first_untrusted_hop_are_ignored() {
        // The client wrote "1.1.1.1" itself; our proxy appended what it saw.
        check_xff(
            &["10.0.0.0/8"],
            "10.0.0.5",
            &["1.1.1.1, 198.51.100.1"],
            "198.51.100.1",
        );
        // A client claiming to be one of our proxies gains nothing either.
        check_xff(
            &["10.0.0.0/8"],
            "10.0.0.5",
            &["10.9.9.9, 198.51.100.1"],
            "198.51.100.1",
        );
    }

    #[test]
    fn chains_of_trusted_hops_are_skipped() {
        check_xff(
            &["10.0.0.0/8", "127.0.0.1/32"],
            "127.0.0.1",
            &["6.6.6.6, 198.51.100.1, 10.1.1.1, 10.2.2.2"],
            "198.51.100.1",
        );
        // Split over several header lines: one list, in order.
        check_xff(
            &["10.0.0.0/8", "127.0.0.1/32"],
            "127.0.0.1",
            &["6.6.6.6, 198.51.100.1", "10.1.1.1", "10.2.2.2"],
            "198.51.100.1",
        );
        // All hops trusted: the leftmost is the client.
        check_xff(
            &["10.0.0.0/8"],
            "10.0.0.1",
            &["10.3.3.3, 10.2.2.2"],
            "10.3.3.3",
        );
    }

    #[test]
    fn malformed_headers_fall_back_to_the_peer() {
        check_xff(&["10.0.0.0/8"], "10.0.0.5", &["not-an-ip"], "10.0.0.5");
        check_xff(&["10.0.0.0/8"], "10.0.0.5", &["198.51.100.1,,"], "10.0.0.5");
        check_xff(
            &["10.0.0.0/8"],
            "10.0.0.5",
            &["1.1.1.1, garbage"],
            "10.0.0.5",
        );
        check_xff(&["10.0.0.0/8"], "10.0.0.5", &[""], "10.0.0.5");
    }

    #[test]
    fn ipv6_peers_hops_and_blocks() {
        check_xff(
            &["2001:db8:1::/48"],
            "2001:db8:1::7",
            &["2001:db8:ffff::1, 2001:db8:1:2::3"],
            "2001:db8:ffff::1",
        );
        check_xff(
            &["2001:db8:1::/48"],
            "2001:db8:2::7",
            &["::1"],
            "2001:db8:2::7",
        );
        // Ports and brackets as some proxies write them.
        check_xff(&["::1/128"], "::1", &["[2001:db8::9]:4711"], "2001:db8::9");
        check_xff(&["::1"], "::1", &["192.0.2.1:4711"], "192.0.2.1");
        // An IPv4 peer seen through a dual-stack socket matches IPv4 blocks.
        check_xff(
            &["10.0.0.0/8"],
            "::ffff:10.0.0.5",
            &["192.0.2.1"],
            "192.0.2.1",
        );
        check_xff(
            &["10.0.0.0/8"],
            "::ffff:192.0.2.2",
            &["1.1.1.1"],
            "192.0.2.2",
        );
    }

    #[test]
    fn rfc7239_forwarded() {
        let p = proxies(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let check = |values: &[&str], expect: &str| {
            let got = p.client_addr(ip("10.0.0.5"), &headers("forwarded", values));
            assert_eq!(got, ip(expect), "{values:?}");
        };
        check(&["for=192.0.2.60;proto=http;by=203.0.113.43"], "192.0.2.60");
        check(
            &["for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\", for=10.0.0.9"],
            "2001:db8:cafe::17",
        );
        check(
            &["For=\"192.0.2.1\";host=\"a,b\"", "for=10.1.1.1"],
            "192.0.2.1",
        );
        // Malformed, obfuscated or unknown: the peer.
        check(&["for=unknown"], "10.0.0.5");
        check(&["for=_hidden"], "10.0.0.5");
        check(&["proto=https"], "10.0.0.5");
        check(&["for=\"[2001:db8::1]"], "10.0.0.5");
        // The X-Forwarded-For header is not read when Forwarded is configured.
        let got = p.client_addr(ip("10.0.0.5"), &headers("x-forwarded-for", &["192.0.2.1"]));
        assert_eq!(got, ip("10.0.0.5"));
    }

    async fn extract(proxies: TrustedProxies, peer: Option<&str>, xff: Option<&str>) -> String {
        use axum::body::Body;
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::get(|ClientAddr(ip): ClientAddr| async move { ip.to_string() }),
            )
            .with_state(Arc::new(proxies));
        let mut req = axum::http::Request::builder().uri("/");
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        let mut req = req.body(Body::empty()).unwrap();
        if let Some(p) = peer {
            let sa = SocketAddr::new(ip(p), 40000);
            req.extensions_mut().insert(ConnectInfo(sa));
        }
        let resp = app.oneshot(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_extractor_reads_connect_info_and_the_state() {
        let trusted = || proxies(&["127.0.0.1/32"], ForwardedHeader::XForwardedFor);
        // No ConnectInfo (oneshot): 127.0.0.1 stands in for the peer.
        assert_eq!(
            extract(TrustedProxies::default(), None, None).await,
            "127.0.0.1"
        );
        assert_eq!(
            extract(trusted(), None, Some("192.0.2.1")).await,
            "192.0.2.1"
        );
        assert_eq!(
            extract(TrustedProxies::default(), None, Some("192.0.2.1")).await,
            "127.0.0.1"
        );
        assert_eq!(
            extract(trusted(), Some("198.51.100.4"), Some("192.0.2.1")).await,
            "198.51.100.4"
        );
    }

    #[test]
    fn cidr_parsing() {
        let ok = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(ok("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!ok("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(ok("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert!(!ok("0.0.0.0/0").contains(ip("::1")));
        assert!(ok("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!ok("127.0.0.1/32").contains(ip("127.0.0.2")));
        assert!(ok("fd00::/8").contains(ip("fd12:3456::1")));
        assert!(ok("::/0").contains(ip("2001:db8::1")));
        assert_eq!(
            "10.0.0.1/8".parse::<IpNet>(),
            Err(ProxyConfigError::HostBits("10.0.0.1/8".into()))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(ProxyConfigError::Prefix("10.0.0.0/33".into()))
        );
        assert_eq!(
            "::/129".parse::<IpNet>(),
            Err(ProxyConfigError::Prefix("::/129".into()))
        );
        assert_eq!(
            "10.0.0/8".parse::<IpNet>(),
            Err(ProxyConfigError::Address("10.0.0/8".into()))
        );
        assert!("10.0.0.0/".parse::<IpNet>().is_err());
        assert!(TrustedProxies::new(&["10.0.0.0/8", "nope"], ForwardedHeader::default()).is_err());
        assert_eq!(
            "Forwarded".parse::<ForwardedHeader>(),
            Ok(ForwardedHeader::Forwarded)
        );
        assert!("x-real-ip".parse::<ForwardedHeader>().is_err());
    }
}
