//! Host names to addresses, once, before any loop starts: the resolver
//! (getaddrinfo, through `ToSocketAddrs`) for names, RFC 6761 for
//! `localhost`, and the choice among several addresses for TCP. Blocking
//! on purpose: it runs in `main` before the generator's poll loop exists,
//! never inside it.
//!
//! Choosing one address for a whole load run, rather than letting each
//! connection walk the list, is what wrk does: the first address that
//! accepts a probe connection serves every connection, so the report
//! describes one server path, and a dead first address costs one probe
//! instead of one timeout per connection of the ramp.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A host as given on the command line, with its port: an IP address
/// literal or a name still to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host as written, without IPv6 brackets (`echo-reactor`,
    /// `127.0.0.1`, `::1`).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// Splits `HOST:PORT` (`[V6]:PORT` for IPv6).
    ///
    /// # Errors
    ///
    /// No port, a port that is not a number from 0 to 65535, an empty
    /// host, or a bare IPv6 address without brackets.
    ///
    /// ```
    /// use echo_reactor::resolve::HostPort;
    /// let hp = HostPort::parse("echo-reactor:7007").unwrap();
    /// assert_eq!((hp.host.as_str(), hp.port), ("echo-reactor", 7007));
    /// assert_eq!(HostPort::parse("[::1]:9").unwrap().host, "::1");
    /// assert!(HostPort::parse("echo-reactor").is_err());
    /// assert!(HostPort::parse("::1:9").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<HostPort, String> {
        let (host, port) = s.rsplit_once(':').ok_or("no :PORT")?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port '{port}' is not a number from 0 to 65535"))?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .filter(|h| h.parse::<Ipv6Addr>().is_ok())
                .ok_or("brackets hold an IPv6 address")?,
            None if host.contains(':') => return Err("an IPv6 address goes in brackets".into()),
            None => host,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("'{host}' is not a host name or address"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }

    /// The address, when the host is an IP address literal: no lookup.
    pub fn literal(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }

    /// Every address the host stands for, in the resolver's order: the
    /// literal itself, `localhost` as 127.0.0.1 then ::1 (RFC 6761: the
    /// loopback, whatever `/etc/hosts` says, IPv4 first as this server
    /// listens by default), or what getaddrinfo answers for a name.
    ///
    /// # Errors
    ///
    /// [`ResolveError`] when the lookup fails or finds no address.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(addr) = self.literal() {
            return Ok(vec![addr]);
        }
        if self.host.eq_ignore_ascii_case("localhost") {
            return Ok(vec![
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.port),
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.port),
            ]);
        }
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let found = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| ResolveError {
                name: self.clone(),
                why: e.to_string(),
            })?;
        // getaddrinfo lists an address once per socket type unless asked
        // otherwise; one of each is enough.
        for addr in found {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(ResolveError {
                name: self.clone(),
                why: "no address".into(),
            });
        }
        Ok(addrs)
    }

    /// Whether the host is a name (not an IP address literal).
    pub fn is_name(&self) -> bool {
        self.literal().is_none()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A name that stands for no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    /// What was looked up.
    pub name: HostPort,
    /// The resolver's answer.
    pub why: String,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host name '{}' resolves to nothing: {}",
            self.name.host, self.why
        )
    }
}

impl std::error::Error for ResolveError {}

/// The first of `addrs` that accepts a TCP connection within `timeout`
/// (the probe is closed at once), with what the others said; the first
/// address when none accepts, so that the run reports the failure as its
/// connections meet it. A single address is returned without a probe.
pub fn first_accepting(addrs: &[SocketAddr], timeout: Duration) -> Probe {
    let mut refused = Vec::new();
    if addrs.len() > 1 {
        for &addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(_) => return Probe { addr, refused },
                Err(e) => refused.push((addr, e)),
            }
        }
    }
    Probe {
        addr: addrs
            .first()
            .copied()
            .unwrap_or(SocketAddr::from(([0; 4], 0))),
        refused,
    }
}

/// What [`first_accepting`] found.
#[derive(Debug)]
pub struct Probe {
    /// The address to use.
    pub addr: SocketAddr,
    /// The addresses tried before it (or all, when none accepted) and why
    /// each failed.
    pub refused: Vec<(SocketAddr, io::Error)>,
}

/// Connects to the first of `addrs` that accepts, each tried in turn
/// within `timeout`.
///
/// # Errors
///
/// The last address and its error when none accepts (or `addrs` is
/// empty: `InvalidInput`).
pub fn connect_first(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), (SocketAddr, io::Error)> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        (
            SocketAddr::from(([0; 4], 0)),
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn hosts_and_ports_split_like_urls_do() {
        for (s, host, port) in [
            ("127.0.0.1:7007", "127.0.0.1", 7007),
            ("[::1]:0", "::1", 0),
            ("echo-reactor:7007", "echo-reactor", 7007),
            ("gen-0.example.com:65535", "gen-0.example.com", 65535),
        ] {
            let hp = HostPort::parse(s).unwrap();
            assert_eq!((hp.host.as_str(), hp.port), (host, port), "{s}");
            assert_eq!(hp.to_string(), s);
        }
        for bad in [
            "",
            ":7007",
            "host",
            "host:",
            "host:65536",
            "host:-1",
            "::1:7",
            "[nope]:7",
            "[::1]7",
            "a b:7",
            "a/b:7",
        ] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn localhost_is_both_loopbacks_and_literals_need_no_lookup() {
        let hp = HostPort::parse("localhost:9").unwrap();
        let addrs = hp.resolve().unwrap();
        assert_eq!(
            addrs,
            ["127.0.0.1:9", "[::1]:9"].map(|a| a.parse::<SocketAddr>().unwrap())
        );
        assert!(hp.is_name());
        let lit = HostPort::parse("[::1]:9").unwrap();
        assert!(!lit.is_name());
        assert_eq!(lit.resolve().unwrap(), vec!["[::1]:9".parse().unwrap()]);
    }

    #[test]
    fn the_probe_skips_a_refused_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        // A port just freed: nothing listens there.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let probe = first_accepting(&[dead, live], Duration::from_secs(2));
        assert_eq!(probe.addr, live);
        assert_eq!(probe.refused.len(), 1);
        assert_eq!(probe.refused[0].0, dead);
        let (_stream, used) = connect_first(&[dead, live], Duration::from_secs(2)).unwrap();
        assert_eq!(used, live);
        let (addr, _) = connect_first(&[dead], Duration::from_secs(2)).unwrap_err();
        assert_eq!(addr, dead);
    }
}
