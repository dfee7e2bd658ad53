//! The rate ramp of `load --stages`: a list of [`Stage`]s turned into a
//! [`Schedule`] that says how many messages of the whole test are due by
//! any time since the window began, and when the n-th one is due; and
//! [`StageTally`], a loop's counts per stage. Pure: no IO, no clock of its
//! own (times are offsets from the window's start, which the loop sets).
//!
//! Over each stage the rate moves linearly from the previous stage's
//! target (0 before the first) to its own, so the messages due by time `t`
//! are the integral of that rate, `N(t)`, a quadratic within a stage.
//! Message `k` of connection `j` (of `C` in the whole test) is the test's
//! message `n = k * C + j` and is due when `N(t)` reaches `n + 1/2`, the
//! middle of its slot (so a stage holds exactly its share, and no message
//! is due on a stage's boundary or at the window's exclusive start): each connection
//! carries its share of the rate, the connections spread over each gap
//! as `--rate` spreads them, and the segments of a split test, which own
//! disjoint connection numbers, run their share of every stage.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::report::{self, new_histogram};

/// Most stages in one `--stages` list; each keeps a latency histogram
/// (about 190 KB) per loop.
pub const MAX_STAGES: usize = 64;

/// One stage: over `duration` the rate moves linearly to `target`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the stage lasts; more than 0.
    pub duration: Duration,
    /// Messages per second of the whole test at the stage's end: 0 (ramp
    /// down) or within `--rate`'s range.
    pub target: f64,
}

/// The stages with what the schedule needs precomputed: each stage's
/// start time, start rate and the messages due before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    stages: Vec<Stage>,
    /// Per stage: (start offset in seconds, rate at its start, messages
    /// due before it).
    starts: Vec<(f64, f64, f64)>,
    /// Messages due over the whole schedule.
    total: f64,
}

impl Schedule {
    /// The schedule of `stages` (checked by the caller: not empty, each
    /// with a duration above 0 and a finite target of at least 0).
    pub fn new(stages: &[Stage]) -> Schedule {
        let mut starts = Vec::with_capacity(stages.len());
        let (mut at, mut from, mut count) = (0.0, 0.0, 0.0);
        for s in stages {
            starts.push((at, from, count));
            let secs = s.duration.as_secs_f64();
            count += (from + s.target) / 2.0 * secs;
            at += secs;
            from = s.target;
        }
        Schedule {
            stages: stages.to_vec(),
            starts,
            total: count,
        }
    }

    /// The stages as given.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The whole schedule's length: the sum of the stages.
    pub fn length(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// Which stage `t` (since the schedule began) falls in; the last one
    /// for a `t` past the end.
    pub fn stage_at(&self, t: Duration) -> usize {
        let secs = t.as_secs_f64();
        // The first stage that starts after `t`, less one.
        let after = self.starts.partition_point(|s| s.0 <= secs);
        after.saturating_sub(1)
    }

    /// Messages of the whole test due by `t` since the schedule began
    /// (fractional: the integral of the rate).
    ///
    /// ```
    /// use echo_reactor::load::stages::{Schedule, Stage};
    /// use std::time::Duration;
    /// let s = |secs, target| Stage { duration: Duration::from_secs(secs), target };
    /// let plan = Schedule::new(&[s(1, 200.0), s(1, 200.0), s(1, 0.0)]);
    /// assert_eq!(plan.due_by(Duration::from_secs(1)), 100.0);
    /// assert_eq!(plan.due_by(Duration::from_secs(2)), 300.0);
    /// assert_eq!(plan.due_by(Duration::from_secs(9)), 400.0);
    /// ```
    pub fn due_by(&self, t: Duration) -> f64 {
        let secs = t.as_secs_f64();
        let i = self.stage_at(t);
        let (Some(stage), Some(&(at, from, count))) = (self.stages.get(i), self.starts.get(i))
        else {
            return 0.0;
        };
        let len = stage.duration.as_secs_f64();
        let tau = (secs - at).clamp(0.0, len);
        let slope = (stage.target - from) / len;
        count + from * tau + slope / 2.0 * tau * tau
    }

    /// When the test's message number `n` (from 0) is due, since the
    /// schedule began; `None` when the schedule ends first.
    pub fn due_at(&self, n: f64) -> Option<Duration> {
        if n > self.total {
            return None;
        }
        // The last stage that begins with fewer than `n` messages due
        // (or the first), so `n` is due within it.
        let i = self.starts.partition_point(|s| s.2 < n).saturating_sub(1);
        let stage = self.stages.get(i)?;
        let (at, from, count) = *self.starts.get(i)?;
        let len = stage.duration.as_secs_f64();
        let d = n - count;
        if d <= 0.0 {
            return Duration::try_from_secs_f64(at).ok();
        }
        // Solve from * tau + a * tau^2 = d, a = slope / 2, in the form
        // that stays exact when the slope is 0 or negative.
        let a = (stage.target - from) / len / 2.0;
        let root = (from * from + 4.0 * a * d).max(0.0).sqrt();
        let denominator = from + root;
        if denominator <= 0.0 {
            return None;
        }
        let tau = (2.0 * d / denominator).min(len);
        Duration::try_from_secs_f64(at + tau).ok()
    }
}

/// Where one connection's messages fall on a schedule: connection `id`
/// of `connections` in the whole test, from `origin` (the window's start;
/// `None` until the loop knows it, and then nothing is due).
#[derive(Debug, Clone, PartialEq)]
pub struct StagedPace {
    /// The schedule, shared by a loop's clients.
    pub plan: std::sync::Arc<Schedule>,
    /// When the schedule began.
    pub origin: Option<Instant>,
    /// The connection's number in the whole test.
    pub id: u64,
    /// Connections of the whole test.
    pub connections: u64,
    /// This connection's slots that were due before it came up (a
    /// `--reconnect` replacement mid-ramp): its message 0 takes the next
    /// one, so it carries its share from now on instead of a burst of
    /// the past.
    pub skipped: u64,
}

impl StagedPace {
    /// The pace of connection `id` of `connections` on `plan` from
    /// `origin`, coming up at `now`: slots already due are skipped.
    pub fn joining(
        plan: std::sync::Arc<Schedule>,
        origin: Option<Instant>,
        id: u64,
        connections: u64,
        now: Instant,
    ) -> StagedPace {
        let mut pace = StagedPace {
            plan,
            origin,
            id,
            connections,
            skipped: 0,
        };
        pace.skipped = pace.due_count(now);
        pace
    }

    /// When this connection's message `seq` is due.
    pub fn due(&self, seq: u64) -> Option<Instant> {
        let origin = self.origin?;
        let slot = seq.checked_add(self.skipped)?;
        let n = slot as f64 * self.connections as f64 + self.slot();
        origin.checked_add(self.plan.due_at(n)?)
    }

    /// Where in each round of `connections` messages this one's fall,
    /// with the half that puts it mid-slot.
    fn slot(&self) -> f64 {
        (self.id % self.connections.max(1)) as f64 + 0.5
    }

    /// How many of this connection's messages are due at `now`: exactly
    /// those whose [`due`](Self::due) is at or before it, so the next one
    /// is always in the future.
    pub fn due_count(&self, now: Instant) -> u64 {
        let Some(origin) = self.origin else {
            return 0;
        };
        let Some(since) = now.checked_duration_since(origin) else {
            return 0;
        };
        let c = self.connections.max(1) as f64;
        let j = self.slot();
        let n = self.plan.due_by(since);
        let mut count = if n < j {
            0
        } else {
            (((n - j) / c).floor() as u64 + 1).saturating_sub(self.skipped)
        };
        // Rounding may put the estimate one off either way: settle it on
        // `due` itself, so the two never disagree.
        while count > 0 && self.due(count - 1).map_or(true, |at| at > now) {
            count -= 1;
        }
        while self.due(count).is_some_and(|at| at <= now) {
            count += 1;
        }
        count
    }
}

/// One stage's counts in a loop: measured replies (by their message's due
/// time) and their latency.
#[derive(Debug, Clone)]
pub struct StageCounts {
    /// Replies of the stage's messages that came back right.
    pub messages: u64,
    /// Their latencies, in microseconds.
    pub latency: Histogram<u64>,
}

/// A loop's counts per stage, and the error total as each stage ended.
#[derive(Debug, Clone)]
pub struct StageTally {
    plan: std::sync::Arc<Schedule>,
    /// When the schedule began (the window's start).
    pub origin: Option<Instant>,
    /// Per stage.
    pub counts: Vec<StageCounts>,
    /// The loop's error total at the end of each stage that has ended.
    pub error_marks: Vec<u64>,
}

impl StageTally {
    /// Empty counts for every stage of `plan`.
    pub fn new(plan: std::sync::Arc<Schedule>) -> StageTally {
        let counts = plan
            .stages()
            .iter()
            .map(|_| StageCounts {
                messages: 0,
                latency: new_histogram(),
            })
            .collect();
        StageTally {
            plan,
            origin: None,
            counts,
            error_marks: Vec::new(),
        }
    }

    /// A measured reply to a message due at `stamp`, after `micros`.
    pub fn record(&mut self, stamp: Instant, micros: u64) {
        let Some(origin) = self.origin else {
            return;
        };
        let i = self.plan.stage_at(stamp.saturating_duration_since(origin));
        if let Some(c) = self.counts.get_mut(i) {
            c.messages += 1;
            c.latency.saturating_record(micros);
        }
    }

    /// Notes the error total `errors` at `now`: a stage that ended since
    /// the last call gets its mark, so errors go to the stage they
    /// happened in.
    pub fn mark(&mut self, now: Instant, errors: u64) {
        let Some(origin) = self.origin else {
            return;
        };
        let current = self.plan.stage_at(now.saturating_duration_since(origin));
        while self.error_marks.len() < current {
            self.error_marks.push(errors);
        }
    }

    /// The stages of a loop's report: durations, this loop's share
    /// (`share` of the test's connections) of each target, counts, and
    /// the errors of each stage out of the loop's `errors` in all (those
    /// before the window go to the first stage, those after it to the
    /// last).
    pub fn into_reports(self, share: f64, errors: u64) -> Vec<report::StageReport> {
        let stages = self.plan.stages().to_vec();
        let mut before = 0;
        let last = stages.len().saturating_sub(1);
        stages
            .iter()
            .zip(self.counts)
            .enumerate()
            .map(|(i, (s, c))| {
                let upto = if i == last {
                    errors
                } else {
                    self.error_marks.get(i).copied().unwrap_or(errors)
                };
                let e = upto.saturating_sub(before);
                before = upto.max(before);
                report::StageReport {
                    duration: s.duration,
                    target_rate: s.target * share,
                    messages: c.messages,
                    errors: e,
                    latency: c.latency,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn s(ms: u64, target: f64) -> Stage {
        Stage {
            duration: Duration::from_millis(ms),
            target,
        }
    }

    #[test]
    fn due_times_invert_the_count() {
        let plan = Schedule::new(&[s(1000, 200.0), s(1000, 200.0), s(500, 0.0), s(500, 50.0)]);
        for n in [0.0, 1.0, 50.0, 99.5, 100.0, 250.0, 300.0, 349.0, 362.0] {
            let t = plan.due_at(n).expect("within the schedule");
            assert!((plan.due_by(t) - n).abs() < 1e-6, "{n} at {t:?}");
        }
        // A ramp from 0: the 25th message of 0 -> 200 in 1 s is due at 0.5 s.
        assert_eq!(plan.due_at(25.0), Some(Duration::from_millis(500)));
        assert_eq!(plan.due_at(400.0), None);
        assert_eq!(plan.stage_at(Duration::from_millis(1500)), 1);
        assert_eq!(plan.stage_at(Duration::from_secs(10)), 3);
        assert_eq!(plan.length(), Duration::from_secs(3));
    }

    #[test]
    fn a_connections_share_is_its_part_of_the_whole() {
        let plan = Arc::new(Schedule::new(&[
            s(1000, 200.0),
            s(1000, 200.0),
            s(1000, 0.0),
        ]));
        let origin = Instant::now();
        let end = origin + Duration::from_secs(3);
        let total: u64 = (0..10)
            .map(|id| {
                StagedPace {
                    plan: Arc::clone(&plan),
                    origin: Some(origin),
                    id,
                    connections: 10,
                    skipped: 0,
                }
                .due_count(end)
            })
            .sum();
        assert_eq!(total, 400);
        let one = StagedPace {
            plan,
            origin: Some(origin),
            id: 3,
            connections: 10,
            skipped: 0,
        };
        for now_ms in [0, 1, 400, 999, 1000, 1500, 2999] {
            let now = origin + Duration::from_millis(now_ms);
            let n = one.due_count(now);
            assert!(one.due(n).map_or(true, |at| at > now), "{now_ms}");
            if n > 0 {
                assert!(one.due(n - 1).expect("due") <= now);
            }
        }
        // A replacement coming up at 1.5 s starts from the slots due then,
        // with nothing overdue.
        let at = origin + Duration::from_millis(1500);
        let late = StagedPace::joining(Arc::clone(&one.plan), Some(origin), 3, 10, at);
        assert_eq!(late.due_count(at), 0);
        assert!(late.due(0).is_some_and(|t| t > at));
        assert_eq!(late.due(0), one.due(one.due_count(at)));
        let waiting = StagedPace {
            origin: None,
            ..one
        };
        assert_eq!(waiting.due_count(end), 0);
    }

    #[test]
    fn errors_go_to_the_stage_they_happened_in() {
        let plan = Arc::new(Schedule::new(&[
            s(1000, 10.0),
            s(1000, 10.0),
            s(1000, 10.0),
        ]));
        let mut t = StageTally::new(plan);
        let origin = Instant::now();
        t.origin = Some(origin);
        t.mark(origin + Duration::from_millis(500), 2);
        t.mark(origin + Duration::from_millis(2500), 5);
        let r = t.into_reports(0.5, 9);
        let errors: Vec<u64> = r.iter().map(|s| s.errors).collect();
        assert_eq!(errors, [5, 0, 4]);
        assert_eq!(r[0].target_rate, 5.0);
    }
}
