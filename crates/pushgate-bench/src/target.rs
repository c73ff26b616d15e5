//! Where connections go: URL parsing restricted to loopback, and the source
//! addresses client sockets are spread over.
//!
//! The parser is hand-written and deliberately narrow. It never resolves names
//! (only the literal `localhost` is accepted, and mapped to 127.0.0.1) so that
//! no configuration mistake can point the generator at another machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{BenchError, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Ws,
}

/// A parsed, loopback-checked URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// `https://` or `wss://`.
    pub tls: bool,
    /// `host[:port]` exactly as written, for the `Host:` header.
    pub authority: String,
    pub addr: SocketAddr,
    /// Starts with `/`; includes the query if there was one.
    pub path_and_query: String,
}

impl Target {
    /// The same server with another path (used to derive `/ws`, `/sse`, … from `--url`).
    pub fn with_path(&self, scheme: Scheme, path_and_query: String) -> Target {
        Target {
            scheme,
            tls: self.tls,
            authority: self.authority.clone(),
            addr: self.addr,
            path_and_query,
        }
    }

    /// The path of a base URL without query and trailing slash, to append endpoints to.
    pub fn base_path(&self) -> &str {
        self.path_and_query
            .split('?')
            .next()
            .unwrap_or("")
            .trim_end_matches('/')
    }
}

/// Parses `http://`, `ws://`, `https://` and `wss://` URLs and refuses any
/// host that is not loopback.
pub fn parse_loopback_url(url: &str) -> Result<Target, BenchError> {
    let (scheme, tls, rest) = if let Some(rest) = strip_prefix_ci(url, "http://") {
        (Scheme::Http, false, rest)
    } else if let Some(rest) = strip_prefix_ci(url, "ws://") {
        (Scheme::Ws, false, rest)
    } else if let Some(rest) = strip_prefix_ci(url, "https://") {
        (Scheme::Http, true, rest)
    } else if let Some(rest) = strip_prefix_ci(url, "wss://") {
        (Scheme::Ws, true, rest)
    } else {
        return Err(BenchError::config(format!(
            "{url}: expected an http://, ws://, https:// or wss:// URL"
        )));
    };
    let default_port = if tls { 443 } else { 80 };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(BenchError::config(format!(
            "{url}: user info in URLs is not supported"
        )));
    }
    let (host, port) = split_host_port(authority, default_port)
        .ok_or_else(|| BenchError::config(format!("{url}: cannot parse host and port")))?;
    let ip = loopback_ip(host).ok_or_else(|| {
        BenchError::new(
            ErrorKind::NotLoopback,
            format!(
                "refusing {url}: host {host:?} is not loopback (only 127.0.0.0/8, [::1] and localhost are allowed)"
            ),
        )
    })?;
    let tail = tail.split('#').next().unwrap_or("");
    let path_and_query = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Ok(Target {
        scheme,
        tls,
        authority: authority.to_string(),
        addr: SocketAddr::new(ip, port),
        path_and_query,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']')?;
        let host = &v6[..close];
        let after = &v6[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, default_port)),
    }
    .filter(|(host, _)| !host.is_empty())
}

/// The address to connect to if `host` is loopback; `None` otherwise.
pub fn loopback_ip(host: &str) -> Option<IpAddr> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if let Ok(v4) = name.parse::<Ipv4Addr>() {
        return v4.is_loopback().then_some(IpAddr::V4(v4));
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        let mapped_loopback = v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback());
        return (v6.is_loopback() || mapped_loopback).then_some(IpAddr::V6(v6));
    }
    None
}

/// Which local address each client socket binds to.
///
/// One source address offers one ephemeral port range towards one server
/// port, so beyond that many connections we must use 127.0.0.2, 127.0.0.3, …
/// (all of 127/8 is local on Linux). With a first address (`--source-ip`)
/// every socket binds, block `b` to that address plus `b`: several generator
/// processes then each have addresses of their own.
#[derive(Debug, Clone, Copy)]
pub struct SourceAddrs {
    per_source: usize,
    v6: bool,
    first: Option<Ipv4Addr>,
}

impl SourceAddrs {
    pub fn new(
        target: SocketAddr,
        per_source: usize,
        connections: usize,
        first: Option<IpAddr>,
    ) -> Result<Self, BenchError> {
        let per_source = per_source.max(1);
        let v6 = target.is_ipv6();
        if v6 && connections > per_source {
            return Err(BenchError::config(format!(
                "{connections} connections to an IPv6 target need more than one source address, \
                 but [::1] is the only IPv6 loopback address; use an IPv4 loopback URL \
                 or at most {per_source} connections"
            )));
        }
        let blocks = connections.div_ceil(per_source);
        if blocks > 250 {
            return Err(BenchError::config(format!(
                "{connections} connections at {per_source} per source address need {blocks} source addresses; at most 250 are used"
            )));
        }
        let first = match first {
            None => None,
            Some(IpAddr::V4(ip)) if ip.is_loopback() && !v6 => {
                // Every block's address must stay inside 127/8.
                let last = u32::from(ip) + blocks.saturating_sub(1) as u32;
                if last > u32::from(Ipv4Addr::new(127, 255, 255, 254)) {
                    return Err(BenchError::config(format!(
                        "--source-ip {ip}: {blocks} source addresses from it leave 127.0.0.0/8"
                    )));
                }
                Some(ip)
            }
            Some(ip) => {
                return Err(BenchError::new(
                    ErrorKind::NotLoopback,
                    format!(
                        "--source-ip {ip}: must be an IPv4 loopback address (127.x.y.z), and the target IPv4"
                    ),
                ))
            }
        };
        Ok(SourceAddrs {
            per_source,
            v6,
            first,
        })
    }

    /// `None` lets the kernel pick (127.0.0.1 towards a 127.0.0.1 target), which
    /// also lets it share ports across destinations; later blocks must bind.
    pub fn for_connection(&self, index: usize) -> Option<IpAddr> {
        if self.v6 {
            return None;
        }
        let block = index / self.per_source;
        if let Some(first) = self.first {
            return Some(IpAddr::V4(Ipv4Addr::from(u32::from(first) + block as u32)));
        }
        if block == 0 {
            return None;
        }
        let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
        Some(IpAddr::V4(Ipv4Addr::from(base + block as u32)))
    }
}

/// The default connections per source address: 25,000, but less when the
/// ephemeral port range is smaller than that.
pub fn default_per_source() -> usize {
    const PREFERRED: usize = 25_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<usize>().ok());
            let lo = it.next()??;
            let hi = it.next()??;
            Some(hi.saturating_sub(lo) + 1)
        });
    match range {
        // Keep a margin: TIME_WAIT sockets of earlier runs still hold ports.
        Some(n) => PREFERRED.min(n * 9 / 10).max(1),
        None => PREFERRED,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so channel
/// names like `a+b#c` survive in a query string.
pub fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        let t = parse_loopback_url("http://127.0.0.1:7070").unwrap();
        assert_eq!(t.scheme, Scheme::Http);
        assert_eq!(t.addr, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:7070");
        assert_eq!(t.path_and_query, "/");

        let t = parse_loopback_url("ws://[::1]:9000/sub?id=1#frag").unwrap();
        assert_eq!(t.scheme, Scheme::Ws);
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert_eq!(t.path_and_query, "/sub?id=1");

        let t = parse_loopback_url("HTTP://LocalHost/push/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(t.base_path(), "/push");

        assert!(parse_loopback_url("http://127.200.3.4:1/x").is_ok());
        assert!(parse_loopback_url("http://localhost.:1").is_ok());
        assert!(parse_loopback_url("http://[::ffff:127.0.0.1]:1").is_ok());
        assert_eq!(
            parse_loopback_url("http://127.0.0.1:7070?x=1")
                .unwrap()
                .path_and_query,
            "/?x=1"
        );
    }

    #[test]
    fn tls_schemes() {
        let t = parse_loopback_url("https://localhost/x").unwrap();
        assert!(t.tls);
        assert_eq!(t.scheme, Scheme::Http);
        assert_eq!(t.addr, "127.0.0.1:443".parse().unwrap());
        let t = parse_loopback_url("WSS://127.0.0.1:8443/sub?id=1").unwrap();
        assert!(t.tls);
        assert_eq!(t.scheme, Scheme::Ws);
        assert_eq!(t.addr, "127.0.0.1:8443".parse().unwrap());
        assert!(t.with_path(Scheme::Http, "/".into()).tls);
        assert!(!parse_loopback_url("ws://127.0.0.1").unwrap().tls);
        assert_eq!(
            parse_loopback_url("https://10.0.0.1").unwrap_err().kind(),
            ErrorKind::NotLoopback
        );
    }

    #[test]
    fn refuses_everything_else() {
        for url in [
            "http://10.0.0.1:80",
            "http://192.168.1.10",
            "http://172.16.0.1",
            "http://8.8.8.8",
            "http://0.0.0.0:7070",
            "http://example.com",
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io",
            "http://127.1",
            "http://[::2]:80",
            "http://[fe80::1]",
            "ws://[::]:80",
        ] {
            let err = parse_loopback_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotLoopback, "{url}");
        }
        for url in [
            "ftp://127.0.0.1",
            "127.0.0.1:80",
            "http://u@127.0.0.1",
            "http://127.0.0.1:notaport",
            "http://:80",
            "http://[::1",
        ] {
            let err = parse_loopback_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
        }
    }

    #[test]
    fn source_addresses_spread_by_block() {
        let target: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let s = SourceAddrs::new(target, 10, 25, None).unwrap();
        assert_eq!(s.for_connection(0), None);
        assert_eq!(s.for_connection(9), None);
        assert_eq!(s.for_connection(10), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(s.for_connection(24), Some("127.0.0.3".parse().unwrap()));
        let v6: SocketAddr = "[::1]:7070".parse().unwrap();
        assert!(SourceAddrs::new(v6, 10, 11, None).is_err());
        assert!(SourceAddrs::new(v6, 10, 10, None).is_ok());
        // A first address of its own: every block binds, from it on.
        let first = Some("127.0.2.254".parse().unwrap());
        let s = SourceAddrs::new(target, 10, 25, first).unwrap();
        assert_eq!(s.for_connection(0), first);
        assert_eq!(s.for_connection(10), Some("127.0.2.255".parse().unwrap()));
        assert_eq!(s.for_connection(20), Some("127.0.3.0".parse().unwrap()));
        let kind = |first: &str, target: SocketAddr| {
            SourceAddrs::new(target, 10, 25, Some(first.parse().unwrap()))
                .unwrap_err()
                .kind()
        };
        assert_eq!(kind("10.0.0.1", target), ErrorKind::NotLoopback);
        assert_eq!(
            SourceAddrs::new(v6, 10, 10, Some("127.0.0.1".parse().unwrap()))
                .unwrap_err()
                .kind(),
            ErrorKind::NotLoopback
        );
        assert_eq!(kind("127.255.255.254", target), ErrorKind::Config);
    }

    #[test]
    fn percent_encoding() {
        let mut s = String::new();
        percent_encode("a-b_c.d~e+f#g/h", &mut s);
        assert_eq!(s, "a-b_c.d~e%2Bf%23g%2Fh");
    }
}
