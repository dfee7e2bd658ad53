//! Several share-nothing loops on the same addresses (`serve --threads N`).
//!
//! Each loop is a whole [`Server`]: its own `Poll`, its own listeners and
//! UDP sockets bound with `SO_REUSEPORT`, its own slab and counters. The
//! kernel spreads new connections and datagrams across the sockets, so the
//! loops share nothing on the data path; their counters are added up when
//! they finish.
//!
//! `SO_REUSEPORT` would also let us bind a port that another process holds
//! with the same option, silently splitting its traffic. So before the
//! shared binds, each address is bound once *without* the option: if that
//! probe fails, the port is taken and we fail loudly, as a single loop does.
//! The probe also turns port 0 into the concrete port every loop then uses.

use std::io;
use std::net::SocketAddr;
use std::thread;

use log::info;

use super::observe::live::Live;
use super::observe::Stats;
use super::Placement;
use super::{Server, ServerConfig, ServerError, ServerHandle};
use crate::net::{self, BindError, BindOptions};

/// One or more loops bound to the same addresses.
pub struct Cluster {
    servers: Vec<Server>,
}

impl Cluster {
    /// Binds `loops` servers (at least one) to the addresses in `config`.
    /// With one loop this is exactly [`Server::bind`]: no `SO_REUSEPORT`.
    ///
    /// # Errors
    ///
    /// The first address that could not be probed or bound, or a failure
    /// setting up a loop's poll.
    pub fn bind(config: ServerConfig, loops: usize) -> Result<Cluster, ServerError> {
        if loops <= 1 {
            return Ok(Cluster {
                servers: vec![Server::bind(config)?],
            });
        }
        let probe_opts = BindOptions {
            backlog: config.backlog,
            reuse_port: false,
        };
        let mut shared = config;
        shared.tcp = probe_all(&shared.tcp, |a| {
            net::tcp_listener(a, probe_opts).and_then(|s| local_addr("tcp", a, s.local_addr()))
        })?;
        shared.tls = probe_all(&shared.tls, |a| {
            net::tcp_listener(a, probe_opts).and_then(|s| local_addr("tls", a, s.local_addr()))
        })?;
        shared.udp = probe_all(&shared.udp, |a| {
            net::udp_socket(a, probe_opts).and_then(|s| local_addr("udp", a, s.local_addr()))
        })?;
        // The probes are closed now; every loop binds the concrete ports.
        let live =
            (shared.stats_interval.is_some() || shared.metrics.is_some()).then(|| Live::new(loops));
        let servers = (0..loops)
            .map(|i| {
                let mut config = shared.clone();
                // Loop 0 reports and serves metrics for all of them.
                if i > 0 {
                    config.stats_interval = None;
                    config.metrics = None;
                }
                let placement = Placement {
                    live: live.clone(),
                    loop_index: i,
                    reuse_port: true,
                };
                Server::bind_placed(config, placement)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cluster { servers })
    }

    /// The TCP addresses bound (the same for every loop).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        self.servers[0].tcp_addrs()
    }

    /// The TLS addresses bound (the same for every loop).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        self.servers[0].tls_addrs()
    }

    /// The metrics endpoint's address (served by loop 0), if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.servers[0].metrics_addr()
    }

    /// The UDP addresses bound (the same for every loop).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        self.servers[0].udp_addrs()
    }

    /// One stop handle per loop.
    pub fn handles(&self) -> Vec<ServerHandle> {
        self.servers.iter().map(Server::handle).collect()
    }

    /// How many loops there are.
    pub fn loops(&self) -> usize {
        self.servers.len()
    }

    /// Runs every loop (the first on this thread, the others on their own)
    /// until all have stopped; returns their counters added up.
    ///
    /// # Errors
    ///
    /// The first loop failure; the other loops still run to their end.
    pub fn run(self) -> io::Result<Stats> {
        let mut servers = self.servers.into_iter();
        let Some(mut first) = servers.next() else {
            return Ok(Stats::default());
        };
        let others: Vec<_> = servers
            .enumerate()
            .map(|(i, mut server)| {
                thread::Builder::new()
                    .name(format!("loop-{}", i + 1))
                    .spawn(move || server.run())
            })
            .collect::<io::Result<_>>()?;
        if !others.is_empty() {
            info!("running {} share-nothing loops", others.len() + 1);
        }
        let mut result = first.run();
        for handle in others {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a server loop panicked")));
            result = match (result, outcome) {
                (Ok(mut total), Ok(stats)) => {
                    total.merge(&stats);
                    Ok(total)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        result
    }
}

fn local_addr(
    proto: &'static str,
    addr: SocketAddr,
    real: io::Result<SocketAddr>,
) -> Result<SocketAddr, BindError> {
    real.map_err(|source| BindError {
        proto,
        addr,
        source,
    })
}

/// Binds and drops a probe socket per address; returns the concrete
/// addresses (port 0 resolved).
fn probe_all(
    addrs: &[SocketAddr],
    probe: impl Fn(SocketAddr) -> Result<SocketAddr, BindError>,
) -> Result<Vec<SocketAddr>, BindError> {
    addrs.iter().map(|&a| probe(a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tcp: &str, udp: &str) -> ServerConfig {
        ServerConfig {
            tcp: vec![tcp.parse().unwrap()],
            udp: vec![udp.parse().unwrap()],
            ..ServerConfig::default()
        }
    }

    #[test]
    fn loops_share_one_concrete_port() {
        let cluster = Cluster::bind(config("127.0.0.1:0", "127.0.0.1:0"), 3).unwrap();
        assert_eq!(cluster.loops(), 3);
        let tcp = cluster.tcp_addrs()[0];
        assert_ne!(tcp.port(), 0);
        for s in &cluster.servers {
            assert_eq!(s.tcp_addrs(), &[tcp]);
            assert_eq!(s.udp_addrs(), cluster.udp_addrs());
        }
    }

    #[test]
    fn a_port_held_by_another_server_is_refused_even_with_reuseport() {
        // Another "process" holding the port with SO_REUSEPORT itself.
        let other = Cluster::bind(config("127.0.0.1:0", "127.0.0.1:0"), 2).unwrap();
        let taken = other.tcp_addrs()[0].to_string();
        let err = Cluster::bind(config(&taken, "127.0.0.1:0"), 2)
            .err()
            .expect("the probe must see the port in use");
        let ServerError::Bind(e) = err else {
            panic!("expected a bind error, got {err}");
        };
        assert_eq!(e.source.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn single_loop_does_not_set_reuseport() {
        let one = Cluster::bind(config("127.0.0.1:0", "127.0.0.1:0"), 1).unwrap();
        let taken = one.tcp_addrs()[0].to_string();
        assert!(Server::bind(config(&taken, "127.0.0.1:0")).is_err());
    }

    #[test]
    fn run_merges_the_counters_of_every_loop() {
        use std::io::{Read, Write};
        let cluster = Cluster::bind(config("127.0.0.1:0", "127.0.0.1:0"), 2).unwrap();
        let addr = cluster.tcp_addrs()[0];
        let handles = cluster.handles();
        let runner = thread::spawn(move || cluster.run());
        for _ in 0..20 {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
        }
        for h in handles {
            h.shutdown().unwrap();
        }
        let stats = runner.join().unwrap().unwrap();
        assert_eq!(stats.tcp_accepted, 20);
        assert_eq!(stats.bytes_out, 80);
    }
}
