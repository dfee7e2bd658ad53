//! echo-reactor: an event-driven, non-blocking TCP and UDP echo server on a
//! single-threaded mio poll loop, and the pieces it is built from.
//!
//! One thread, one [`mio::Poll`]: a token names each source (listener, UDP
//! socket, signal, connection), and the loop hands each readiness event to
//! that source's handler. Connections live in a [`slab::Slab`] whose key is
//! their token. Reads land in one scratch buffer, are transformed in place
//! and written straight back; only what the kernel refuses is kept.
//!
//! # The public surface
//!
//! Chosen on purpose; everything else is `pub(crate)` and may change.
//!
//! | item | for |
//! |---|---|
//! | [`Server`], [`ServerConfig`], [`ServerHandle`], [`ServerError`], [`BindError`] | embedding one loop: bind, run on a thread, stop |
//! | [`Cluster`] | `--threads N`: N share-nothing loops on the same ports |
//! | [`Stats`], [`Watermarks`] | the final counters; per-connection backpressure |
//! | [`Service`], [`Reply`], [`Opening`], [`Mode`], [`mode`] | what the server answers: the trait and the built-in modes (pure, no IO) |
//! | [`load`]: [`load::LoadConfig`], [`load::run`], [`load::Report`] | running a verified load against any echo server |
//! | [`load::payload`] | the payload scheme, so another client can make and check the same bytes |
//! | [`load::split`], [`load::merge`], [`load::hdr_v2`], [`load::output`] | one test split into segments and merged back, the histogram's V2 text form, reports as files and tables |
//! | [`load::stages`], [`load::find_max`] | load shapes: a ramp of rates (`--stages`), the highest rate under a latency objective (`--find-max`) |
//! | [`client`] | the interactive line client |
//! | [`resolve`] | host names to addresses, once before a run, and the first address that accepts |
//! | [`tls_client`]: [`tls_client::TlsConnector`] | what `load tls://` and `client tls://` trust and check |
//!
//! The command line (clap) is the binary's (`src/main.rs`, `src/cli.rs`,
//! behind the default `cli` feature): the library takes configs, never
//! arguments.
//!
//! # Where things live
//!
//! | module | owns |
//! |---|---|
//! | `server` | the loop: `Server` and its components (acceptor, connection table, UDP endpoint, observers, shutdown) |
//! | `mode` | the `Service` interface and the built-in modes; no IO |
//! | `load` | the load generator: its loop, one client interface over TCP and UDP, payloads, the report |
//! | `client` | the interactive client; blocking on purpose |
//! | `resolve` | host names to addresses (getaddrinfo, `localhost`), the TCP probe; blocking, before any loop |
//! | `tls_client` | the clients' side of TLS: trust, server name, a non-blocking session over a socket |
//! | `net` | socket setup and `io::Error` predicates |
//!
//! # Embedding
//!
//! ```no_run
//! use echo_reactor::server::{Server, ServerConfig};
//! let mut config = ServerConfig::default();
//! config.tcp.push("127.0.0.1:0".parse().unwrap());
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

pub mod client;
pub mod load;
pub mod mode;
mod net;
pub mod resolve;
pub mod server;
pub mod tls_client;
mod tls_records;

pub use mode::{Mode, Opening, Reply, Service};
pub use net::BindError;
pub use server::{TlsIdentity, TlsSetupError};

/// The parsers a stranger's bytes reach, for the fuzz targets in `fuzz/`
/// (which CI does not build). Not part of the supported surface.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::server::observe::metrics::MAX_REQUEST as METRICS_MAX_REQUEST;
    pub use crate::server::proxy::{
        parse as parse_proxy_header, Parsed as ProxyHeader, MAX_V1_HEADER, MAX_V2_HEADER,
    };

    /// What the metrics endpoint answers to the request bytes `request`
    /// (read whole, as a scraper would send them): the response it
    /// writes, or `None` while the head is incomplete.
    pub fn metrics_response(request: &[u8]) -> Option<Vec<u8>> {
        crate::server::observe::metrics::answer_request(request)
    }
}
pub use server::Cluster;
pub use server::{Server, ServerConfig, ServerError, ServerHandle, Stats, Watermarks};
