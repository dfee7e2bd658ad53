//! echo-reactor: an event-driven, non-blocking TCP and UDP echo server on a
//! single-threaded mio poll loop, and the pieces it is built from.
//!
//! One thread, one [`mio::Poll`]: a token names each source (listener, UDP
//! socket, signal, connection), and the loop hands each readiness event to
//! that source's handler. Connections live in a [`slab::Slab`] whose key is
//! their token. Reads land in one scratch buffer, are transformed in place
//! and written straight back; only what the kernel refuses is kept.
//!
//! # Module map
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | the loop: `Server`, its config, handle and dispatch |
//! | [`server::token`] | which token names which source |
//! | [`server::accept`] | accepting, the connection cap, pausing on fd exhaustion |
//! | [`server::conn`] | one TCP connection: read, answer, write, half-close |
//! | [`server::limits`] | idle and write timeouts (coarse sweep), UDP admission |
//! | [`server::udp`] | UDP: one reply per datagram, drop and count |
//! | [`server::shutdown`] | signals and the bounded drain |
//! | [`mode`] | the `Service` interface and the built-in modes; no IO |
//! | [`buffer`] | bounded pending output and its watermarks; no IO |
//! | [`net`] | socket setup and `io::Error` predicates |
//! | [`ratelimit`] | per-source token buckets in a bounded table; no IO |
//! | [`stats`] | the loop's counters and the final report |
//! | [`cli`] | command-line types and parsing; no IO |
//! | [`load`] | the load generator: its loop, clients, payloads, report |
//!
//! # Embedding
//!
//! ```no_run
//! use echo_reactor::server::{Server, ServerConfig};
//! let config = ServerConfig {
//!     tcp: vec!["127.0.0.1:0".parse().unwrap()],
//!     ..ServerConfig::default()
//! };
//! let mut server = Server::bind(config)?;
//! println!("on {}", server.tcp_addrs()[0]);
//! let handle = server.handle();
//! let loop_thread = std::thread::spawn(move || server.run());
//! handle.shutdown()?;
//! let stats = loop_thread.join().expect("loop thread")?;
//! println!("{stats}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod load;
pub mod mode;
pub mod net;
pub mod server;

pub use mode::{Mode, Opening, Reply, Service};
pub use server::{Server, ServerConfig, ServerError, ServerHandle, Stats, Watermarks};
