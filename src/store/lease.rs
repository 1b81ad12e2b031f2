//! Who owns a run (SERVICE.md §2): an engine instance holds a lease that it
//! renews; the store's clock decides when it expires; every takeover bumps
//! the run's epoch, and every write of an owner carries its epoch, so a
//! stale owner can never commit after a takeover.
//!
//! The decision whether a run may be taken over is [`may_take_over`], a
//! pure function of the recorded owner, the would-be owner, the store's
//! clock and a probe of this host's processes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a lease lasts without renewal, unless the engine says
/// otherwise. Engines renew every third of it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// An engine instance that owns (or wants to own) runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Owner {
    /// Unique per engine instance (a process may host several).
    pub id: String,
    /// The host, as [`crate::host::identity`] names it.
    pub host: String,
    /// The engine's process.
    pub pid: u32,
    /// That process's start time ([`crate::host::process_start`]): with
    /// the pid, it proves the process gone even if the pid was recycled.
    pub started: Option<u64>,
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
    /// Where this engine's server takes runners' reports
    /// (`http://host:port`), when it is an `orch serve`: another server
    /// that receives a report for a run this engine owns forwards it
    /// there. `None` for engines that take no reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Owner {
    /// This process, as a new engine instance with a fresh id.
    ///
    /// ```
    /// let me = orch::store::Owner::this_process();
    /// assert_eq!(me.pid, std::process::id());
    /// assert_ne!(me.id, orch::store::Owner::this_process().id);
    /// ```
    pub fn this_process() -> Owner {
        let pid = std::process::id();
        Owner {
            id: format!("engine-{}", crate::time::new_run_id()),
            host: crate::host::identity().to_string(),
            pid,
            started: crate::host::process_start(pid),
            ttl: DEFAULT_TTL,
            url: None,
        }
    }

    /// The same owner, advertising `url` as where its server takes
    /// runners' reports.
    pub fn with_url(mut self, url: impl Into<String>) -> Owner {
        self.url = Some(url.into());
        self
    }

    /// The same owner with another lease duration.
    pub fn with_ttl(mut self, ttl: Duration) -> Owner {
        self.ttl = ttl;
        self
    }

    /// True when this owner ran on `host` (the host asking) and its
    /// process is gone there: no process has its pid, or the one that has
    /// it started at another time (a recycled pid). Never for another
    /// host, whose pids say nothing here. `probe(pid)` gives a process's
    /// start time on this host (`None`: no such process).
    ///
    /// ```
    /// let mut o = orch::store::Owner::this_process();
    /// assert!(!o.proven_dead(&o.host.clone(), &orch::host::process_start));
    /// o.started = o.started.map(|s| s + 1);
    /// assert!(o.proven_dead(&o.host.clone(), &orch::host::process_start));
    /// ```
    pub fn proven_dead(&self, host: &str, probe: &dyn Fn(u32) -> Option<u64>) -> bool {
        self.host == host
            && match probe(self.pid) {
                None => true,
                Some(started) => self.started.is_some_and(|s| s != started),
            }
    }

    /// How errors name it.
    pub fn describe(&self) -> String {
        format!("engine {} (pid {} on {})", self.id, self.pid, self.host)
    }
}

/// A run's owner as its store records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OwnerRecord {
    /// The owner; `None` once it released the run.
    pub owner: Option<Owner>,
    /// The run's epoch: 1 at creation, bumped by every takeover.
    pub epoch: u64,
    /// When the lease expires, in milliseconds of the store's clock.
    pub until_ms: i64,
}

impl OwnerRecord {
    /// A record: `owner` (none once released) holds epoch `epoch` until
    /// `until_ms` of the store's clock.
    pub fn new(owner: Option<Owner>, epoch: u64, until_ms: i64) -> OwnerRecord {
        OwnerRecord {
            owner,
            epoch,
            until_ms,
        }
    }
}

/// The right to write a run: which run, who, and under which epoch.
/// Writes carrying an epoch that is no longer the run's are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The run.
    pub run: String,
    /// The owner's id.
    pub owner: String,
    /// The epoch the owner holds.
    pub epoch: u64,
}

impl Lease {
    /// A lease; stores hand these out, engines and tests carry them.
    pub fn new(run: impl Into<String>, owner: impl Into<String>, epoch: u64) -> Lease {
        Lease {
            run: run.into(),
            owner: owner.into(),
            epoch,
        }
    }
}

/// Why a takeover is allowed (or whom it would take from).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Nobody holds the run (it was released, or never owned).
    Free,
    /// The taker already owns it.
    Own,
    /// The lease ran out on the store's clock.
    Expired,
    /// The owner ran on this host and its process is gone: its pid does
    /// not exist, or belongs to a process started at another time (a
    /// recycled pid).
    Dead,
    /// Taken anyway, on request, from a live owner.
    Forced,
    /// The owner is alive (or cannot be proven dead) and its lease holds:
    /// refused, naming it.
    Held(String),
}

impl Verdict {
    /// True unless [`Verdict::Held`].
    pub fn allows(&self) -> bool {
        !matches!(self, Verdict::Held(_))
    }
}

/// Whether `me` may take over a run whose owner is `record`, at `now_ms`
/// of the store's clock. `probe(pid)` gives a process's start time on
/// this host (`None`: no such process).
///
/// ```
/// use std::time::Duration;
/// use orch::store::{lease::{may_take_over, Verdict}, Owner, OwnerRecord};
///
/// let mut gone = Owner::this_process();
/// gone.pid = 7;
/// gone.started = Some(100);
/// let record = OwnerRecord::new(Some(gone), 1, 10_000);
/// let me = Owner::this_process();
/// // pid 7 runs, but started at another time: a recycled pid.
/// assert_eq!(may_take_over(&record, &me, 5_000, false, &|_| Some(999)), Verdict::Dead);
/// // pid 7 is the same process: refused while the lease holds ...
/// assert!(!may_take_over(&record, &me, 5_000, false, &|_| Some(100)).allows());
/// // ... and allowed once it expired.
/// assert_eq!(may_take_over(&record, &me, 10_000, false, &|_| Some(100)), Verdict::Expired);
/// ```
pub fn may_take_over(
    record: &OwnerRecord,
    me: &Owner,
    now_ms: i64,
    force: bool,
    probe: &dyn Fn(u32) -> Option<u64>,
) -> Verdict {
    let Some(owner) = &record.owner else {
        return Verdict::Free;
    };
    if owner.id == me.id {
        return Verdict::Own;
    }
    if now_ms >= record.until_ms {
        return Verdict::Expired;
    }
    if owner.proven_dead(&me.host, probe) {
        return Verdict::Dead;
    }
    if force {
        return Verdict::Forced;
    }
    let left = Duration::from_millis((record.until_ms - now_ms).max(0) as u64);
    Verdict::Held(format!(
        "{} owns it (epoch {}) and is alive{}; its lease runs {:.0} s more unless renewed",
        owner.describe(),
        record.epoch,
        if owner.host == me.host {
            ""
        } else {
            " as far as this host can tell"
        },
        left.as_secs_f64().ceil()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str, host: &str, pid: u32, started: Option<u64>) -> Owner {
        Owner {
            id: id.into(),
            host: host.into(),
            pid,
            started,
            ttl: DEFAULT_TTL,
            url: None,
        }
    }

    fn record(o: Option<Owner>, until_ms: i64) -> OwnerRecord {
        OwnerRecord {
            owner: o,
            epoch: 3,
            until_ms,
        }
    }

    #[test]
    fn every_verdict() {
        let me = owner("me", "h", 1, Some(1));
        let live = |_| Some(50);
        let r = record(None, 0);
        assert_eq!(may_take_over(&r, &me, 0, false, &live), Verdict::Free);
        let r = record(Some(me.clone()), 100);
        assert_eq!(may_take_over(&r, &me, 0, false, &live), Verdict::Own);
        let other = owner("other", "h", 9, Some(50));
        let r = record(Some(other.clone()), 100);
        assert_eq!(may_take_over(&r, &me, 100, false, &live), Verdict::Expired);
        assert_eq!(may_take_over(&r, &me, 0, false, &|_| None), Verdict::Dead);
        assert_eq!(
            may_take_over(&r, &me, 0, false, &|_| Some(51)),
            Verdict::Dead
        );
        assert_eq!(may_take_over(&r, &me, 0, true, &live), Verdict::Forced);
        let Verdict::Held(why) = may_take_over(&r, &me, 0, false, &live) else {
            panic!("a live owner holds the run")
        };
        assert!(
            why.contains("engine other (pid 9 on h)") && why.contains("epoch 3"),
            "{why}"
        );
    }

    #[test]
    fn another_hosts_pid_proves_nothing() {
        let me = owner("me", "h", 1, Some(1));
        let far = owner("far", "elsewhere", 9, Some(50));
        let r = record(Some(far), 100);
        // No process 9 here, but that says nothing about the other host.
        let v = may_take_over(&r, &me, 0, false, &|_| None);
        assert!(!v.allows(), "{v:?}");
        assert_eq!(
            may_take_over(&r, &me, 100, false, &|_| None),
            Verdict::Expired
        );
    }

    #[test]
    fn an_owner_without_a_recorded_start_time_is_judged_by_its_pid() {
        let me = owner("me", "h", 1, Some(1));
        let old = owner("old", "h", 9, None);
        let r = record(Some(old), 100);
        assert!(!may_take_over(&r, &me, 0, false, &|_| Some(5)).allows());
        assert_eq!(may_take_over(&r, &me, 0, false, &|_| None), Verdict::Dead);
    }
}
