//! Limits that protect the server as a whole rather than one request (issue 17):
//!
//! - [`RateLimits`]: requests per second with a burst, per API key and per campaign (GCRA, the
//!   "generic cell rate algorithm": one timestamp per key, exact, no background refill task);
//! - [`InFlight`]: the bound on requests being processed at once, past which new ones are shed
//!   with 503 before queueing makes every request slow;
//! - [`plan_connections`]: raises the process's file-descriptor soft limit to its hard limit and
//!   fits the per-worker connection limit into it, or refuses to start.
//!
//! The HTTP side (the middleware, the body deadline) lives in `api::transport` and `api::body`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::api::error::TransportError;
use crate::config::{ConfigError, RateLimitSettings, TransportSettings};
use crate::engine::Engine;

/// Entries one rate-limit table keeps at most. Keys are created by admins and campaigns are
/// counted only when they exist, so this is a backstop, not a working size.
const MAX_TRACKED: usize = 100_000;

/// One GCRA limit: `interval` between requests at the sustained rate, and `tolerance`, how far
/// ahead of now the theoretical arrival time may run (`interval × (burst − 1)`).
#[derive(Debug, Clone, Copy)]
struct Gcra {
    interval_ns: u64,
    tolerance_ns: u64,
}

impl Gcra {
    fn new(per_second: f64, burst: u32) -> Option<Self> {
        if per_second <= 0.0 {
            return None;
        }
        let interval_ns = ((1e9 / per_second).round() as u64).max(1);
        Some(Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1)) - 1),
        })
    }

    /// The new theoretical arrival time if a request at `now` is allowed, else how long to wait.
    fn admit(&self, tat: Option<u64>, now: u64) -> Result<u64, Duration> {
        // A stored time at or before now is the same as no entry: the bucket is full.
        let tat = tat.unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.tolerance_ns {
            return Err(Duration::from_nanos(ahead - self.tolerance_ns));
        }
        Ok(tat.saturating_add(self.interval_ns))
    }
}

/// One limit and the theoretical arrival time of every id it has seen recently.
#[derive(Debug)]
struct Table {
    gcra: Gcra,
    tats: Mutex<HashMap<String, u64>>,
    cap: usize,
}

impl Table {
    fn new(gcra: Gcra, cap: usize) -> Self {
        Self {
            gcra,
            tats: Mutex::new(HashMap::new()),
            cap,
        }
    }
}

fn remember(map: &mut HashMap<String, u64>, cap: usize, id: &str, tat: u64, now: u64) {
    if let Some(t) = map.get_mut(id) {
        *t = tat;
        return;
    }
    if map.len() >= cap {
        // Lossless: an entry whose time has passed carries no state.
        map.retain(|_, t| *t > now);
    }
    if map.len() < cap {
        map.insert(id.to_string(), tat);
    }
    // Else every tracked id is busy right now; this one goes untracked for this request rather
    // than letting the table grow without bound.
}

/// Per-key and per-campaign request rates (`[rate_limits]`).
#[derive(Debug)]
pub struct RateLimits {
    keys: Option<Table>,
    campaigns: Option<Table>,
    epoch: Instant,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self::with_cap(settings, MAX_TRACKED)
    }

    fn with_cap(settings: &RateLimitSettings, cap: usize) -> Self {
        Self {
            keys: Gcra::new(settings.key_per_second, settings.key_burst)
                .map(|g| Table::new(g, cap)),
            campaigns: Gcra::new(settings.campaign_per_second, settings.campaign_burst)
                .map(|g| Table::new(g, cap)),
            epoch: Instant::now(),
        }
    }

    /// Count one request of `key_id` (to `campaign`, when it names one that exists), or refuse it
    /// with how long to wait. A refused request counts against neither limit.
    pub fn check_request(
        &self,
        engine: &Engine,
        key_id: &str,
        campaign: Option<&str>,
    ) -> Result<(), TransportError> {
        // Campaign ids come from paths: count only campaigns that exist, so made-up names
        // neither fill the table nor draw on a real campaign's budget.
        let campaign = campaign.filter(|c| self.campaigns.is_some() && engine.campaign(c).is_ok());
        self.check(key_id, campaign)
    }

    /// Count one request of `key_id` to `campaign` (taken as existing), or refuse it.
    pub fn check(&self, key_id: &str, campaign: Option<&str>) -> Result<(), TransportError> {
        let now = self.epoch.elapsed();
        self.check_at(key_id, campaign, now)
    }

    fn check_at(
        &self,
        key_id: &str,
        campaign: Option<&str>,
        now: Duration,
    ) -> Result<(), TransportError> {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let refuse = |scope: String, retry_after| {
            metrics::counter!("tailor_rate_limited_total").increment(1);
            Err(TransportError::RateLimited { scope, retry_after })
        };
        // Lock order: keys, then campaigns.
        let mut keys = self.keys.as_ref().map(|t| (t, t.tats.lock()));
        let key_tat = match &keys {
            Some((t, map)) => match t.gcra.admit(map.get(key_id).copied(), now) {
                Ok(tat) => Some(tat),
                Err(wait) => return refuse(format!("key {key_id:?}"), wait),
            },
            None => None,
        };
        if let (Some(c), Some(t)) = (campaign, &self.campaigns) {
            let mut map = t.tats.lock();
            match t.gcra.admit(map.get(c).copied(), now) {
                Ok(tat) => remember(&mut map, t.cap, c, tat, now),
                Err(wait) => return refuse(format!("campaign {c:?}"), wait),
            }
        }
        if let (Some((t, map)), Some(tat)) = (keys.as_mut(), key_tat) {
            remember(map, t.cap, key_id, tat, now);
        }
        Ok(())
    }

    /// Ids tracked (keys, campaigns), for tests.
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let len = |t: &Option<Table>| t.as_ref().map_or(0, |t| t.tats.lock().len());
        (len(&self.keys), len(&self.campaigns))
    }
}

/// Requests being processed, with the bound past which new ones are shed
/// (`transport.max_in_flight`).
#[derive(Debug)]
pub struct InFlight {
    count: AtomicUsize,
    bound: usize,
    retry_after_s: u64,
}

/// A request refused because [`InFlight`]'s bound was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub in_flight: usize,
    pub retry_after_s: u64,
}

/// One request counted in [`InFlight`]; uncounts it when dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub fn new(bound: usize, retry_after_s: u64) -> Arc<Self> {
        Arc::new(Self {
            count: AtomicUsize::new(0),
            bound,
            retry_after_s,
        })
    }

    fn overloaded(&self, in_flight: usize) -> Shed {
        metrics::counter!("tailor_overload_shed_total").increment(1);
        Shed {
            in_flight,
            retry_after_s: self.retry_after_s,
        }
    }

    /// Refuse now if the bound is already reached (without counting the request).
    pub fn check(&self) -> Result<(), Shed> {
        let n = self.count.load(Ordering::Relaxed);
        if n >= self.bound {
            return Err(self.overloaded(n));
        }
        Ok(())
    }

    /// Count a request, or refuse it when `bound` requests are already in flight.
    pub fn enter(self: &Arc<Self>) -> Result<InFlightGuard, Shed> {
        match self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.bound).then_some(n + 1)
            }) {
            Ok(n) => {
                metrics::gauge!("tailor_http_in_flight").set((n + 1) as f64);
                Ok(InFlightGuard(self.clone()))
            }
            Err(n) => Err(self.overloaded(n)),
        }
    }

    /// Requests counted now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let n = self.0.count.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("tailor_http_in_flight").set(n.saturating_sub(1) as f64);
    }
}

/// File descriptors kept for everything but connections: the store's files, plugin libraries,
/// the listening socket, logs.
pub const RESERVED_FDS: u64 = 256;

/// actix-web's own per-worker default, the ceiling of the derived limit.
const DEFAULT_MAX_CONNECTIONS: u64 = 25_000;

/// The connection limit a server will run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPlan {
    /// Open connections per worker.
    pub per_worker: usize,
    /// The file-descriptor soft limit after raising it.
    pub fd_limit: u64,
}

/// Raise the process's open-file soft limit to its hard limit and fit the connection limit into
/// it: `transport.max_connections` per worker (0: derived), times `workers`, plus
/// [`RESERVED_FDS`]. An explicit limit that does not fit is refused, naming the setting.
pub fn plan_connections(
    t: &TransportSettings,
    workers: usize,
) -> Result<ConnectionPlan, ConfigError> {
    let fd_limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            return Err(ConfigError::Invalid {
                field: "transport.max_connections",
                message: format!("cannot read or raise the open-file limit: {e}"),
            })
        }
    };
    fit_connections(t.max_connections as u64, workers as u64, fd_limit)
}

fn fit_connections(
    per_worker: u64,
    workers: u64,
    fd_limit: u64,
) -> Result<ConnectionPlan, ConfigError> {
    let workers = workers.max(1);
    let budget = fd_limit.saturating_sub(RESERVED_FDS);
    let refuse = |message: String| ConfigError::Invalid {
        field: "transport.max_connections",
        message,
    };
    let per_worker = if per_worker == 0 {
        let derived = (budget / workers).min(DEFAULT_MAX_CONNECTIONS);
        if derived == 0 {
            return Err(refuse(format!(
                "the process may open only {fd_limit} files, fewer than the {RESERVED_FDS} the server keeps for itself plus one connection per worker ({workers} workers); raise the hard limit (`ulimit -Hn`, systemd `LimitNOFILE=`)"
            )));
        }
        derived
    } else {
        let need = per_worker
            .saturating_mul(workers)
            .saturating_add(RESERVED_FDS);
        if need > fd_limit {
            return Err(refuse(format!(
                "{per_worker} connections per worker × {workers} workers + {RESERVED_FDS} reserved needs {need} file descriptors, but the process may open {fd_limit} (its hard limit); lower transport.max_connections (0 derives it) or raise the hard limit (`ulimit -Hn`, systemd `LimitNOFILE=`)"
            )));
        }
        per_worker
    };
    Ok(ConnectionPlan {
        per_worker: per_worker as usize,
        fd_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(key: (f64, u32), campaign: (f64, u32)) -> RateLimits {
        RateLimits::new(&RateLimitSettings {
            key_per_second: key.0,
            key_burst: key.1,
            campaign_per_second: campaign.0,
            campaign_burst: campaign.1,
        })
    }

    fn retry_after(r: Result<(), TransportError>) -> Duration {
        match r {
            Err(TransportError::RateLimited { retry_after, .. }) => retry_after,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn burst_then_sustained_rate() {
        let l = limits((10.0, 5), (0.0, 1));
        for _ in 0..5 {
            l.check_at("k", None, T0).unwrap();
        }
        // The sixth at the same instant waits one interval (100 ms).
        let wait = retry_after(l.check_at("k", None, T0));
        assert_eq!(wait, Duration::from_millis(100));
        // After waiting it exactly, one more passes, and the next waits again.
        l.check_at("k", None, T0 + wait).unwrap();
        assert!(l.check_at("k", None, T0 + wait).is_err());
        // Another key is untouched.
        l.check_at("other", None, T0).unwrap();
        // Idle long enough, the whole burst is back.
        let later = T0 + Duration::from_secs(10);
        for _ in 0..5 {
            l.check_at("k", None, later).unwrap();
        }
    }

    #[test]
    fn campaign_limit_is_shared_and_refusals_cost_nothing() {
        let l = limits((1_000.0, 100), (1.0, 2));
        l.check_at("a", Some("home"), T0).unwrap();
        l.check_at("b", Some("home"), T0).unwrap();
        let e = l.check_at("c", Some("home"), T0).unwrap_err();
        assert!(e.to_string().contains("campaign \"home\""), "{e}");
        assert_eq!(e.retry_after_s(), Some(1));
        // Other campaigns, and requests naming none, still pass.
        l.check_at("c", Some("cart"), T0).unwrap();
        l.check_at("c", None, T0).unwrap();
        // Key "c" was refused on "home" and not charged for it: 1 (cart) + 1 (none) + 99 more.
        for _ in 0..98 {
            l.check_at("c", None, T0).unwrap();
        }
        assert!(l.check_at("c", None, T0).is_err());
    }

    #[test]
    fn off_means_unlimited() {
        let l = limits((0.0, 1), (0.0, 1));
        for _ in 0..10_000 {
            l.check_at("k", Some("c"), T0).unwrap();
        }
        assert_eq!(l.tracked(), (0, 0));
    }

    #[test]
    fn tables_stay_bounded() {
        let settings = RateLimitSettings {
            key_per_second: 1.0,
            key_burst: 1,
            campaign_per_second: 1.0,
            campaign_burst: 1,
        };
        let l = RateLimits::with_cap(&settings, 64);
        for i in 0..10_000 {
            // All at one instant: every entry stays busy, the table still stops at its cap.
            l.check_at(&format!("k{i}"), Some(&format!("c{i}")), T0)
                .unwrap();
        }
        assert_eq!(l.tracked(), (64, 64));
        // Once their times have passed, old entries make room for new ones.
        let later = T0 + Duration::from_secs(5);
        l.check_at("fresh", Some("fresh"), later).unwrap();
        assert_eq!(l.tracked(), (1, 1));
        assert!(l.check_at("fresh", None, later).is_err());
    }

    #[test]
    fn in_flight_bound() {
        let f = InFlight::new(2, 3);
        let a = f.enter().unwrap();
        let _b = f.enter().unwrap();
        let e = f.enter().unwrap_err();
        assert_eq!(TransportError::from(e).retry_after_s(), Some(3));
        assert!(f.check().is_err());
        drop(a);
        assert_eq!(f.current(), 1);
        f.check().unwrap();
        let _c = f.enter().unwrap();
    }

    #[test]
    fn connections_fit_the_fd_limit() {
        // Derived: what the budget allows per worker, capped at actix's default.
        let p = fit_connections(0, 2, 20_000).unwrap();
        assert_eq!(p.per_worker, (20_000 - 256) / 2);
        assert_eq!(fit_connections(0, 2, 1 << 20).unwrap().per_worker, 25_000);
        // Explicit and fitting.
        assert_eq!(fit_connections(1_000, 4, 5_000).unwrap().per_worker, 1_000);
        // Explicit and too large: refused, naming the setting and both numbers.
        let e = fit_connections(10_000, 2, 4_096).unwrap_err().to_string();
        assert!(
            e.contains("transport.max_connections") && e.contains("20256") && e.contains("4096"),
            "{e}"
        );
        // A limit too small for anything.
        let e = fit_connections(0, 2, 200).unwrap_err().to_string();
        assert!(e.contains("ulimit -Hn"), "{e}");
    }
}
