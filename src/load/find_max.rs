//! `load --find-max`: the highest open-loop rate that meets a latency
//! objective. A [`Search`] decides the rates (doubling from a start until
//! a step misses, then bisecting between the last pass and the first miss
//! until they are within 5%, at most [`MAX_STEPS`] steps); [`run`] runs
//! each step as an ordinary load run (warm-up, window, drain: the same
//! machinery as `load --rate`) and judges its report against the
//! [`Objective`]. The result renders as a table, as JSON, and as the
//! capacity curve (`plot`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::report::{Errors, Report, BEHIND_BELOW};
use super::{report_json, LoadConfig, LoadError, MAX_RATE, MIN_RATE};

/// Most steps one search runs.
pub const MAX_STEPS: usize = 20;

/// The search stops bisecting once the first miss is within this factor
/// of the last pass.
pub const CLOSE_ENOUGH: f64 = 1.05;

/// The rate of the first step when none is given (`--rate`).
pub const DEFAULT_START_RATE: f64 = 1000.0;

/// Each step's window when `--duration` is not given.
pub const DEFAULT_STEP: Duration = Duration::from_secs(5);

/// Each step's warm-up when `--warmup` is 0.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(1);

/// A percentile an objective may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Percentile {
    /// The median.
    P50,
    /// The 90th percentile.
    P90,
    /// The 99th percentile.
    P99,
    /// The 99.9th percentile.
    P999,
}

impl Percentile {
    /// Every percentile, by name: `p50`, `p90`, `p99`, `p99.9`.
    pub const ALL: [(Percentile, &'static str); 4] = [
        (Percentile::P50, "p50"),
        (Percentile::P90, "p90"),
        (Percentile::P99, "p99"),
        (Percentile::P999, "p99.9"),
    ];

    /// Its name, as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P90 => "p90",
            Percentile::P99 => "p99",
            Percentile::P999 => "p99.9",
        }
    }

    /// Its value in `[p50, p90, p99, p99.9, max]` as reports give them.
    fn of(self, [p50, p90, p99, p999, _]: [u64; 5]) -> u64 {
        match self {
            Percentile::P50 => p50,
            Percentile::P90 => p90,
            Percentile::P99 => p99,
            Percentile::P999 => p999,
        }
    }
}

/// A latency objective: `percentile` at or below `latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Objective {
    /// Which percentile.
    pub percentile: Percentile,
    /// Its highest passing value.
    pub latency: Duration,
}

impl Objective {
    /// The objective's bound in microseconds, the reports' unit.
    pub fn latency_us(&self) -> u64 {
        u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for Objective {
    /// As written: `p99=5ms`, `p50=250us`, `p99.9=1.5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.latency_us();
        let latency = if us % 1_000_000 == 0 {
            format!("{}s", us / 1_000_000)
        } else if us % 1000 == 0 {
            format!("{}ms", us / 1000)
        } else {
            format!("{us}us")
        };
        write!(f, "{}={latency}", self.percentile.name())
    }
}

/// One step of the search: the rate asked for and what it gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Messages per second asked for.
    #[serde(serialize_with = "report_json::number_ref")]
    pub rate: f64,
    /// Replies per second achieved over the window.
    #[serde(serialize_with = "report_json::figure")]
    pub msgs_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// The objective's percentile, microseconds.
    pub objective_us: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// The step met the objective.
    pub ok: bool,
    /// Why it missed, for people; `None` when it passed.
    pub miss: Option<String>,
}

impl Step {
    /// Judges a step's report: it passes when the objective's percentile
    /// is at or below its bound, no error of any kind happened, and the
    /// replies per second reached 95% of `rate`.
    pub fn judge(rate: f64, report: &Report, objective: &Objective) -> Step {
        let p = report.percentiles_us();
        let achieved = report.msgs_per_sec();
        let objective_us = objective.percentile.of(p);
        let errors = report.errors.total();
        let miss = if report.interrupted {
            Some("interrupted".to_string())
        } else if errors > 0 || report.failure.is_some() {
            Some(format!(
                "{errors} errors ({}){}",
                error_kinds(&report.errors),
                report
                    .first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(", first: {e}"))
            ))
        } else if report.messages == 0 {
            Some("no reply measured".to_string())
        } else if objective_us > objective.latency_us() {
            Some(format!(
                "{} {objective_us} us above {} us",
                objective.percentile.name(),
                objective.latency_us()
            ))
        } else if achieved < BEHIND_BELOW * rate {
            Some(format!(
                "achieved {:.0} msgs/s, under 95% of {rate}",
                achieved
            ))
        } else {
            None
        };
        Step {
            rate,
            msgs_per_sec: achieved,
            p50_us: p[0],
            p99_us: p[2],
            objective_us,
            errors,
            ok: miss.is_none(),
            miss,
        }
    }
}

/// The kinds of error that happened, with their counts: `lost 94, reset 1`.
fn error_kinds(e: &Errors) -> String {
    let kinds = [
        ("connect", e.connect),
        ("reset", e.reset),
        ("timeout", e.timeout),
        ("mismatch", e.mismatch),
        ("lost", e.lost),
        ("closed", e.closed),
        ("io", e.io),
        ("duplicate", e.duplicate),
        ("tls", e.tls),
    ];
    let named: Vec<String> = kinds
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    named.join(", ")
}

/// Which rate to try next: doubling from `start` until a step misses,
/// then bisecting between the last pass and the first miss. Pure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    start: f64,
    /// The highest rate that passed.
    pass: Option<f64>,
    /// The lowest rate that missed.
    miss: Option<f64>,
    steps: usize,
}

impl Search {
    /// A search whose first step asks for `start` messages per second.
    pub fn new(start: f64) -> Search {
        Search {
            start: start.clamp(MIN_RATE, MAX_RATE),
            pass: None,
            miss: None,
            steps: 0,
        }
    }

    /// The next rate to try; `None` when the search is over: the first
    /// step missed, the last pass and the first miss are within 5%, the
    /// highest rate passed, or [`MAX_STEPS`] steps ran.
    ///
    /// ```
    /// use echo_reactor::load::find_max::Search;
    /// let mut s = Search::new(1000.0);
    /// let mut tried = Vec::new();
    /// while let Some(rate) = s.next_rate() {
    ///     tried.push(rate);
    ///     s.record(rate, rate <= 5000.0);
    /// }
    /// assert_eq!(&tried[..4], [1000.0, 2000.0, 4000.0, 8000.0]);
    /// assert_eq!(tried[4], 6000.0);
    /// let best = s.best().unwrap();
    /// assert!(best <= 5000.0 && best >= 5000.0 / 1.05, "{best}");
    /// ```
    pub fn next_rate(&self) -> Option<f64> {
        if self.steps >= MAX_STEPS {
            return None;
        }
        match (self.pass, self.miss) {
            (None, None) => Some(self.start),
            (None, Some(_)) => None,
            (Some(pass), None) if pass >= MAX_RATE => None,
            (Some(pass), None) => Some((pass * 2.0).min(MAX_RATE)),
            (Some(pass), Some(miss)) if miss <= pass * CLOSE_ENOUGH => None,
            (Some(pass), Some(miss)) => Some(round_rate((pass + miss) / 2.0)),
        }
    }

    /// Notes that `rate` passed (`ok`) or missed.
    pub fn record(&mut self, rate: f64, ok: bool) {
        self.steps += 1;
        if ok {
            self.pass = Some(self.pass.map_or(rate, |p| p.max(rate)));
        } else {
            self.miss = Some(self.miss.map_or(rate, |m| m.min(rate)));
        }
    }

    /// The highest rate that passed so far.
    pub fn best(&self) -> Option<f64> {
        self.pass
    }
}

/// A bisected rate: whole messages per second, unless it is under 10.
fn round_rate(r: f64) -> f64 {
    if r >= 10.0 {
        r.round()
    } else {
        r
    }
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct FindMax {
    /// The objective searched for.
    pub objective: Objective,
    /// The highest rate that passed; `None` when none did.
    pub max_rate: Option<f64>,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    /// A signal stopped the search early.
    pub interrupted: bool,
}

/// The longest a whole search can take: every step ends within
/// `--connect-timeout` + warm-up + window + `--drain-timeout` + 1 s (see
/// `load --help`).
pub fn bound(config: &LoadConfig) -> Duration {
    let step = config.connect_timeout
        + config.warmup
        + config.duration
        + config.drain_timeout
        + Duration::from_secs(1);
    step * MAX_STEPS as u32
}

/// Runs the search: each step a load run of `config` at the step's rate
/// (its `rate` is the first step's; `warmup` and `duration` each step's),
/// judged against `objective`; `on_step` hears each step as it ends.
/// Once `stop` is set, the step running ends early and the search with
/// it.
///
/// # Errors
///
/// What a run returns ([`LoadError::Invalid`] for a configuration that
/// makes no run).
pub fn run(
    config: &LoadConfig,
    objective: Objective,
    stop: &AtomicBool,
    on_step: &mut dyn FnMut(&Step),
) -> Result<FindMax, LoadError> {
    let mut search = Search::new(config.rate.unwrap_or(DEFAULT_START_RATE));
    let mut steps = Vec::new();
    let mut interrupted = false;
    while let Some(rate) = search.next_rate() {
        let step_config = LoadConfig {
            rate: Some(rate),
            ..config.clone()
        };
        let report = super::run_until(&step_config, stop, None)?;
        let step = Step::judge(rate, &report, &objective);
        on_step(&step);
        search.record(rate, step.ok);
        steps.push(step);
        if report.interrupted || stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
    }
    Ok(FindMax {
        objective,
        max_rate: search.best(),
        steps,
        interrupted,
    })
}

/// `find_max` in JSON.
#[derive(Debug, Serialize)]
struct FindMaxJson<'a> {
    objective: String,
    #[serde(serialize_with = "report_json::optional_number")]
    max_rate: Option<f64>,
    steps: &'a [Step],
}

/// The whole `load --find-max --json` object.
#[derive(Debug, Serialize)]
struct SearchJson<'a> {
    target: &'a str,
    connections: usize,
    size: usize,
    #[serde(serialize_with = "report_json::number_ref")]
    step_duration_s: f64,
    #[serde(serialize_with = "report_json::number_ref")]
    warmup_s: f64,
    find_max: FindMaxJson<'a>,
    interrupted: bool,
    ok: bool,
}

impl FindMax {
    /// True when some step passed.
    pub fn is_ok(&self) -> bool {
        self.max_rate.is_some() && !self.interrupted
    }

    /// The result as one JSON object on one line: the run's settings and
    /// `"find_max": {"objective", "max_rate", "steps": [...]}`.
    pub fn to_json(&self, config: &LoadConfig) -> String {
        let target = config.target.to_string();
        let json = SearchJson {
            target: &target,
            connections: config.connections,
            size: config.size,
            step_duration_s: config.duration.as_secs_f64(),
            warmup_s: config.warmup.as_secs_f64(),
            find_max: FindMaxJson {
                objective: self.objective.to_string(),
                max_rate: self.max_rate,
                steps: &self.steps,
            },
            interrupted: self.interrupted,
            ok: self.is_ok(),
        };
        // Numbers, strings and options only: serde_json cannot fail.
        serde_json::to_string(&json).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The last line for people: the highest passing rate, or that none
    /// passed.
    pub fn summary(&self) -> String {
        match self.max_rate {
            Some(r) => format!(
                "max rate   {r:.0} msgs/s with {} (highest of {} steps that passed)",
                self.objective,
                self.steps.iter().filter(|s| s.ok).count()
            ),
            None => format!(
                "max rate   none: even the first step ({} msgs/s) missed {} (a lower --rate to start from?)",
                self.steps.first().map_or(0.0, |s| s.rate),
                self.objective
            ),
        }
    }
}

/// The table's heading, above the rows [`table_row`] writes.
pub const TABLE_HEADING: &str = "step        rate    achieved       p50       p99   errors  result";

/// The step's row, given its number from 1.
pub fn table_row(n: usize, s: &Step) -> String {
    let result = match &s.miss {
        None => "pass".to_string(),
        Some(why) => format!("miss: {why}"),
    };
    format!(
        "{n:>4} {:>11.0} {:>11.0} {:>9} {:>9} {:>8}  {result}",
        s.rate,
        s.msgs_per_sec,
        format!("{} us", s.p50_us),
        format!("{} us", s.p99_us),
        s.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Proto;

    #[test]
    fn a_first_miss_ends_the_search_without_a_rate() {
        let mut s = Search::new(500.0);
        assert_eq!(s.next_rate(), Some(500.0));
        s.record(500.0, false);
        assert_eq!(s.next_rate(), None);
        assert_eq!(s.best(), None);
    }

    #[test]
    fn the_search_stops_within_5_percent_or_20_steps() {
        let capacity = 2345.0;
        let mut s = Search::new(100.0);
        let mut n = 0;
        while let Some(rate) = s.next_rate() {
            s.record(rate, rate <= capacity);
            n += 1;
        }
        let best = s.best().expect("a pass");
        assert!(
            best <= capacity && best * CLOSE_ENOUGH >= capacity,
            "{best}"
        );
        assert!(n <= MAX_STEPS, "{n}");
        // Always missing after the first pass still ends.
        let mut s = Search::new(MAX_RATE);
        s.record(MAX_RATE, true);
        assert_eq!(s.next_rate(), None, "nothing above the highest rate");
    }

    #[test]
    fn a_step_passes_only_within_the_objective_without_errors_at_the_rate() {
        let objective = Objective {
            percentile: Percentile::P99,
            latency: Duration::from_millis(5),
        };
        assert_eq!(objective.to_string(), "p99=5ms");
        let mut r = Report::new(Proto::Tcp, "127.0.0.1:7".parse().expect("address"), 1);
        r.duration = Duration::from_secs(1);
        r.messages = 1000;
        r.sent = 1000;
        for _ in 0..1000 {
            r.latency.record(400).expect("in range");
        }
        assert!(Step::judge(1000.0, &r, &objective).ok);
        let slow = Step::judge(2000.0, &r, &objective);
        assert!(!slow.ok && slow.miss.as_deref().unwrap_or("").contains("achieved"));
        r.errors.reset = 1;
        let broken = Step::judge(1000.0, &r, &objective);
        assert_eq!(broken.miss.as_deref(), Some("1 errors (reset 1)"));
        r.errors.reset = 0;
        for _ in 0..100 {
            r.latency.record(9000).expect("in range");
        }
        let late = Step::judge(1000.0, &r, &objective);
        assert!(!late.ok && late.objective_us > 5000, "{late:?}");
    }
}
