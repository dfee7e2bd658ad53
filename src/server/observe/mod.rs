//! The observers: what lets an operator see the loop work. The counters
//! ([`Stats`], bumped by every component), the live figures each loop
//! publishes ([`live`]), the `--stats` line and the `--metrics` endpoint.
//! They read figures the loop hands them and never touch a connection.

pub(crate) mod live;
pub(crate) mod metrics;
mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Registry;

pub use stats::Stats;

use super::config::{ServerConfig, ServerError};
use crate::net::BindError;
use live::{Live, Reporter, Snapshot};

/// How often a cluster's loops publish their figures for the others.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The stats line, the metrics endpoint, and this loop's slot in the live
/// figures; all `None` when neither `--stats` nor `--metrics` is on.
pub(crate) struct Observers {
    /// The shared slots (a cluster's loops share them).
    live: Option<std::sync::Arc<Live>>,
    loop_index: usize,
    /// When to publish next: only a cluster's loops publish on a timer; a
    /// lone loop publishes right before it reports or answers a scrape.
    publish_at: Option<Instant>,
    /// The `--stats` line (loop 0 only).
    reporter: Option<Reporter>,
    /// The `--metrics` endpoint (loop 0 only).
    metrics: Option<metrics::Endpoint>,
}

impl Observers {
    /// Binds the metrics endpoint and sets up the stats line, as `config`
    /// asks, for loop `loop_index` of a cluster whose loops publish into
    /// `live` (`None`: a slot of its own, made when stats or metrics are on).
    pub fn new(
        config: &ServerConfig,
        live: Option<Arc<Live>>,
        loop_index: usize,
        registry: &Registry,
        now: Instant,
    ) -> Result<Observers, ServerError> {
        let metrics = match config.metrics {
            Some(addr) => {
                Some(
                    metrics::Endpoint::bind(addr, registry).map_err(|source| BindError {
                        proto: "http",
                        addr,
                        source,
                    })?,
                )
            }
            None => None,
        };
        let observed = config.stats_interval.is_some() || metrics.is_some();
        let live = live.or_else(|| observed.then(|| Live::new(1)));
        Ok(Observers {
            publish_at: live
                .as_ref()
                .filter(|l| l.loops() > 1)
                .map(|_| now + PUBLISH_EVERY),
            live,
            loop_index,
            reporter: config.stats_interval.map(|every| Reporter::new(every, now)),
            metrics,
        })
    }

    /// The metrics endpoint's address, when `--metrics` is on.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(metrics::Endpoint::addr)
    }

    /// The earliest of publishing, reporting and the metrics deadlines.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.publish_at,
            self.reporter.as_ref().map(Reporter::next_at),
            self.metrics
                .as_ref()
                .and_then(metrics::Endpoint::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Publishes this loop's figures, logs the stats line and serves the
    /// metrics timers, each when due. `figures` is asked only then: it
    /// walks every connection.
    pub fn on_timer(&mut self, now: Instant, registry: &Registry, figures: impl Fn() -> Snapshot) {
        if self.publish_at.is_some_and(|at| now >= at) {
            self.publish(figures());
            self.publish_at = Some(now + PUBLISH_EVERY);
        }
        if self.reporter.as_ref().is_some_and(|r| now >= r.next_at()) {
            self.publish(figures());
            let total = self.live.as_ref().map(|l| l.total()).unwrap_or_default();
            if let Some(r) = &mut self.reporter {
                r.report(&total, now);
            }
        }
        if let Some(m) = &mut self.metrics {
            m.expire(now);
            let (live, index) = (&self.live, self.loop_index);
            m.on_timer(registry, now, &mut || fresh_metrics(live, index, &figures));
        }
    }

    /// Copies this loop's figures into its slot for the other loops.
    fn publish(&self, figures: Snapshot) {
        if let Some(live) = &self.live {
            live.publish(self.loop_index, figures);
        }
    }

    /// The metrics listener is readable; a scraper whose whole request
    /// came with its connect is answered at once, with fresh totals.
    pub fn on_metrics_accept(
        &mut self,
        registry: &Registry,
        now: Instant,
        figures: impl Fn() -> Snapshot,
    ) {
        if let Some(m) = &mut self.metrics {
            let (live, index) = (&self.live, self.loop_index);
            m.on_accept_ready(registry, now, &mut || fresh_metrics(live, index, &figures));
        }
    }

    /// A scraper's socket is ready: once its request is complete, answer
    /// it with fresh totals (this loop's published first).
    pub fn on_metrics_client(&mut self, i: usize, figures: impl Fn() -> Snapshot) {
        let Some(m) = &mut self.metrics else {
            return;
        };
        let (live, index) = (&self.live, self.loop_index);
        m.on_client_ready(i, || fresh_metrics(live, index, &figures));
    }

    /// Shutdown: scrapers get no answer from a server on its way out.
    pub fn close_metrics(&mut self) {
        self.metrics = None;
    }
}

/// The metrics text: this loop's figures, published first, plus the
/// other loops' last ones.
fn fresh_metrics(live: &Option<Arc<Live>>, index: usize, figures: &dyn Fn() -> Snapshot) -> String {
    let Some(live) = live else {
        return String::new();
    };
    live.publish(index, figures());
    metrics::render(&live.total(), live.loops(), live.uptime())
}
