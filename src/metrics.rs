//! `GET /metrics`: counters and gauges in the Prometheus text format (prometheus-client).
//!
//! No label holds a value a sender chose: providers, results, entries and targets come from
//! the settings or from fixed lists, never a repository, branch or commit.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub provider: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub entry: String,
    pub trigger: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryLabel {
    pub entry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
    pub result: &'static str,
}

type Seconds = fn() -> Histogram;

/// Job durations: 0.1 s to about 55 min.
fn durations() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

/// Time in the queue: 10 ms to about 5.5 min.
fn waits() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub jobs: Family<JobLabels, Counter>,
    pub job_duration: Family<EntryLabel, Histogram, Seconds>,
    pub queue_wait: Family<EntryLabel, Histogram, Seconds>,
    pub jobs_running: Gauge,
    pub queue_depth: Gauge,
    pub queue_capacity: Gauge,
    pub last_success: Family<EntryLabel, Gauge<f64, AtomicU64>>,
    pub reloads: Family<ResultLabel, Counter>,
    pub settings_degraded: Gauge,
    pub outbox_pending: Gauge,
    /// API requests refused for their token (none, a wrong one, or too many wrong ones).
    pub api_refused: Counter,
    /// Log streams and `?wait=` requests being answered now (at most `api.max_waiting`).
    pub api_waiting: Gauge,
    /// 1 for each frozen entry (set at each scrape from the store).
    pub frozen: Family<EntryLabel, Gauge>,
    pub notifications: Family<TargetLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Counts a job of `entry` that reached its final `state`.
    pub fn job_ended(&self, entry: String, trigger: &'static str, state: &'static str) {
        self.jobs.get_or_create(&JobLabels { entry, trigger, state }).inc();
    }

    /// The frozen entries, now: exactly `entries` have the gauge.
    pub fn set_frozen<'a>(&self, entries: impl Iterator<Item = &'a str>) {
        self.frozen.clear();
        for entry in entries {
            self.frozen.get_or_create(&EntryLabel { entry: entry.to_string() }).set(1);
        }
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wh_automata");
        let info = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        registry.register("build", "The version of wh-automata running", info);
        let m = Metrics {
            deliveries: Family::default(),
            jobs: Family::default(),
            job_duration: Family::new_with_constructor(durations as Seconds),
            queue_wait: Family::new_with_constructor(waits as Seconds),
            jobs_running: Gauge::default(),
            queue_depth: Gauge::default(),
            queue_capacity: Gauge::default(),
            last_success: Family::default(),
            reloads: Family::default(),
            settings_degraded: Gauge::default(),
            outbox_pending: Gauge::default(),
            frozen: Family::default(),
            api_refused: Counter::default(),
            api_waiting: Gauge::default(),
            notifications: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "deliveries",
            "Webhook requests answered, by provider and result",
            m.deliveries.clone(),
        );
        registry.register("jobs", "Jobs ended (or superseded), by entry, trigger and state", m.jobs.clone());
        registry.register(
            "job_duration_seconds",
            "Time from a job's start to its end",
            m.job_duration.clone(),
        );
        registry.register(
            "job_queue_wait_seconds",
            "Time a job waited between being recorded and starting",
            m.queue_wait.clone(),
        );
        registry.register("jobs_running", "Jobs running now", m.jobs_running.clone());
        registry.register(
            "api_refused",
            "API requests refused for their token (none, a wrong one, or too many wrong ones)",
            m.api_refused.clone(),
        );
        registry.register(
            "api_waiting",
            "Log streams and ?wait= requests of the API being answered now (at most api.max_waiting)",
            m.api_waiting.clone(),
        );
        registry.register(
            "entry_frozen",
            "1 for an entry that is frozen (its deliveries held until it is unfrozen)",
            m.frozen.clone(),
        );
        registry.register("queue_depth", "Jobs waiting to run", m.queue_depth.clone());
        registry.register("queue_capacity", "Jobs that may wait (server.queue)", m.queue_capacity.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "When the entry's last successful job ended (Unix time)",
            m.last_success.clone(),
        );
        registry.register(
            "settings_reloads",
            "Settings reloads, by result (loaded, refused)",
            m.reloads.clone(),
        );
        registry.register(
            "settings_degraded",
            "1 while the last settings edit is refused (the previous settings serve)",
            m.settings_degraded.clone(),
        );
        registry.register(
            "outbox_pending",
            "Statuses and messages not yet delivered",
            m.outbox_pending.clone(),
        );
        registry.register(
            "notifications",
            "Statuses and messages sent, by target (status: the commit status) and result",
            m.notifications.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one answered webhook request.
    pub fn delivery(&self, provider: &'static str, result: &'static str) {
        self.deliveries.get_or_create(&DeliveryLabels { provider, result }).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
