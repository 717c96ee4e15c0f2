//! The runtime's metrics registry: lock-free counters, gauges and
//! fixed-bucket histograms updated by the node task, the storage thread, the
//! apply thread and the HTTP peers; read as a [`MetricsSnapshot`] (see
//! [`crate::RaftHandle::metrics`]) and rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_core::{NodeId, Role};

/// Upper bounds of the latency buckets, in microseconds.
const LATENCY_BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// Upper bounds of the batch-size buckets.
const SIZE_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// A histogram with fixed bucket bounds, updated with relaxed atomics.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then the overflow bucket.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn latency() -> Self {
        Self::new(&LATENCY_BOUNDS_US)
    }

    fn sizes() -> Self {
        Self::new(&SIZE_BOUNDS)
    }

    pub(crate) fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub(crate) fn record_duration(&self, duration: Duration) {
        self.record(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram as read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets (microseconds for latencies).
    pub bounds: Vec<u64>,
    /// Observations per bucket (not cumulative); the last one counts those
    /// above every bound.
    pub counts: Vec<u64>,
    /// Sum of the observed values.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Mean of the observations (0 when empty).
    pub fn mean(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum as f64 / n as f64,
        }
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): an upper
    /// estimate; `u64::MAX` when it falls in the overflow bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return self.bounds.get(i).copied().unwrap_or(u64::MAX);
            }
        }
        u64::MAX
    }

    /// Writes it as a Prometheus histogram; `scale` divides bounds and sum
    /// (1e6 turns microseconds into seconds).
    fn render(&self, out: &mut String, name: &str, labels: &str, scale: f64) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            match self.bounds.get(i) {
                Some(bound) => {
                    let le = *bound as f64 / scale;
                    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum as f64 / scale);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The registry shared by one node's tasks and threads.
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) term: AtomicU64,
    /// 0 follower, 1 candidate, 2 leader.
    pub(crate) role: AtomicU64,
    pub(crate) leader: AtomicU64,
    pub(crate) commit_index: AtomicU64,
    pub(crate) applied_index: AtomicU64,
    pub(crate) proposals_accepted: AtomicU64,
    pub(crate) proposals_rejected: AtomicU64,
    pub(crate) proposals_lost: AtomicU64,
    pub(crate) proposals_forwarded: AtomicU64,
    pub(crate) proposals_inflight: AtomicU64,
    pub(crate) elections_won: AtomicU64,
    pub(crate) term_changes: AtomicU64,
    pub(crate) snapshots_sent: AtomicU64,
    pub(crate) snapshots_installed: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    /// Proposals stepped together in one node-task round.
    pub(crate) propose_batch: Histogram,
    /// Entries made durable by one storage write.
    pub(crate) storage_batch_entries: Histogram,
    /// One storage write: write + fdatasync (microseconds).
    pub(crate) fsync: Histogram,
    /// A proposal on the leader, from stepping it to its response (microseconds).
    pub(crate) append: Histogram,
    /// Messages per HTTP request to a peer.
    pub(crate) peer_batch: Histogram,
    /// Per peer: one POST of messages, sent to answered (microseconds).
    peer_rtt: Mutex<BTreeMap<NodeId, Arc<Histogram>>>,
}

/// A node's metrics registry: cheap to clone, shared by its tasks. The
/// runtime hands it to its [`crate::Connect`] ([`crate::Connect::attach_metrics`])
/// so that peers record their side; read it with [`Metrics::snapshot`] or
/// [`crate::RaftHandle::metrics`].
#[derive(Clone, Debug)]
pub struct Metrics(pub(crate) Arc<Registry>);

impl Metrics {
    /// Records one request of `messages` messages to peer `peer` that took
    /// `round_trip` to be answered.
    pub fn record_peer_request(&self, peer: NodeId, messages: usize, round_trip: Duration) {
        self.peer_rtt(peer).record_duration(round_trip);
        self.0.peer_batch.record(messages as u64);
    }

    /// Records `count` messages a peer dropped.
    pub fn record_dropped(&self, count: usize) {
        self.0.messages_dropped.fetch_add(count as u64, Ordering::Relaxed);
    }

    pub(crate) fn new() -> Self {
        let zero = || AtomicU64::new(0);
        Metrics(Arc::new(Registry {
            term: zero(),
            role: zero(),
            leader: zero(),
            commit_index: zero(),
            applied_index: zero(),
            proposals_accepted: zero(),
            proposals_rejected: zero(),
            proposals_lost: zero(),
            proposals_forwarded: zero(),
            proposals_inflight: zero(),
            elections_won: zero(),
            term_changes: zero(),
            snapshots_sent: zero(),
            snapshots_installed: zero(),
            messages_sent: zero(),
            messages_dropped: zero(),
            messages_received: zero(),
            propose_batch: Histogram::sizes(),
            storage_batch_entries: Histogram::sizes(),
            fsync: Histogram::latency(),
            append: Histogram::latency(),
            peer_batch: Histogram::sizes(),
            peer_rtt: Mutex::new(BTreeMap::new()),
        }))
    }

    /// The round-trip histogram of peer `id`.
    pub(crate) fn peer_rtt(&self, id: NodeId) -> Arc<Histogram> {
        let mut peers = self.0.peer_rtt.lock().unwrap_or_else(|p| p.into_inner());
        peers.entry(id).or_insert_with(|| Arc::new(Histogram::latency())).clone()
    }

    pub(crate) fn set_role(&self, role: Role, term: u64, leader: Option<NodeId>) {
        let r = &self.0;
        r.role.store(role_code(role), Ordering::Relaxed);
        r.term.store(term, Ordering::Relaxed);
        r.leader.store(leader.unwrap_or(0), Ordering::Relaxed);
    }

    /// The metrics as of now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = &self.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let peer_rtt = {
            let peers = r.peer_rtt.lock().unwrap_or_else(|p| p.into_inner());
            peers.iter().map(|(id, h)| (*id, h.snapshot())).collect()
        };
        MetricsSnapshot {
            term: load(&r.term),
            role: match load(&r.role) {
                2 => Role::Leader,
                1 => Role::Candidate,
                _ => Role::Follower,
            },
            leader: Some(load(&r.leader)).filter(|&l| l != 0),
            commit_index: load(&r.commit_index),
            applied_index: load(&r.applied_index),
            proposals_accepted: load(&r.proposals_accepted),
            proposals_rejected: load(&r.proposals_rejected),
            proposals_lost: load(&r.proposals_lost),
            proposals_forwarded: load(&r.proposals_forwarded),
            proposals_inflight: load(&r.proposals_inflight),
            elections_won: load(&r.elections_won),
            term_changes: load(&r.term_changes),
            snapshots_sent: load(&r.snapshots_sent),
            snapshots_installed: load(&r.snapshots_installed),
            messages_sent: load(&r.messages_sent),
            messages_dropped: load(&r.messages_dropped),
            messages_received: load(&r.messages_received),
            propose_batch: r.propose_batch.snapshot(),
            storage_batch_entries: r.storage_batch_entries.snapshot(),
            fsync_us: r.fsync.snapshot(),
            append_us: r.append.snapshot(),
            peer_batch: r.peer_batch.snapshot(),
            peer_rtt_us: peer_rtt,
        }
    }
}

fn role_code(role: Role) -> u64 {
    match role {
        Role::Follower => 0,
        Role::Candidate => 1,
        Role::Leader => 2,
    }
}

/// A node's runtime metrics at one moment ([`crate::RaftHandle::metrics`]).
/// Latencies are in microseconds.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Current term.
    pub term: u64,
    /// Current role.
    pub role: Role,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Highest index known committed (as of the node task's last round).
    pub commit_index: u64,
    /// Highest index applied to the state machine.
    pub applied_index: u64,
    /// Proposals appended to the log by this node as leader.
    pub proposals_accepted: u64,
    /// Proposals refused by this node (not leader, too large, limits).
    pub proposals_rejected: u64,
    /// Accepted proposals overwritten by another leader.
    pub proposals_lost: u64,
    /// Requests this node forwarded to the leader.
    pub proposals_forwarded: u64,
    /// Accepted proposals waiting to be applied.
    pub proposals_inflight: u64,
    /// Elections this node won.
    pub elections_won: u64,
    /// Term changes seen by this node.
    pub term_changes: u64,
    /// Snapshots sent in full to a follower.
    pub snapshots_sent: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Messages handed to peers.
    pub messages_sent: u64,
    /// Messages peers dropped (queue full, or failed requests).
    pub messages_dropped: u64,
    /// Messages received from other nodes.
    pub messages_received: u64,
    /// Proposals stepped in one node-task round.
    pub propose_batch: HistogramSnapshot,
    /// Entries per storage write.
    pub storage_batch_entries: HistogramSnapshot,
    /// Storage write latency (one write + one fdatasync), microseconds.
    pub fsync_us: HistogramSnapshot,
    /// Leader-side proposal latency, from stepping to the state machine's
    /// response (append, replication, commit, apply), microseconds.
    pub append_us: HistogramSnapshot,
    /// Messages per HTTP request to a peer.
    pub peer_batch: HistogramSnapshot,
    /// Per peer: the round trip of one HTTP request of messages, microseconds.
    pub peer_rtt_us: BTreeMap<NodeId, HistogramSnapshot>,
}

impl MetricsSnapshot {
    /// Appends the runtime metrics as Prometheus text (`raft_http_*`
    /// counters and histograms, latencies in seconds). The node-state gauges
    /// (term, role, commit, applied) are left to
    /// [`MetricsSnapshot::render_state`], for exporters that render their own.
    pub fn render_prometheus(&self, out: &mut String) {
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            "raft_http_proposals_accepted_total",
            "Proposals appended as leader.",
            self.proposals_accepted,
        );
        counter("raft_http_proposals_rejected_total", "Proposals refused.", self.proposals_rejected);
        counter("raft_http_proposals_lost_total", "Accepted proposals overwritten.", self.proposals_lost);
        counter(
            "raft_http_proposals_forwarded_total",
            "Requests forwarded to the leader.",
            self.proposals_forwarded,
        );
        counter("raft_http_elections_won_total", "Elections won.", self.elections_won);
        counter("raft_http_term_changes_total", "Term changes.", self.term_changes);
        counter("raft_http_snapshots_sent_total", "Snapshots sent in full.", self.snapshots_sent);
        counter("raft_http_snapshots_installed_total", "Snapshots installed.", self.snapshots_installed);
        counter("raft_http_messages_sent_total", "Messages handed to peers.", self.messages_sent);
        counter("raft_http_messages_dropped_total", "Messages dropped by peers.", self.messages_dropped);
        counter("raft_http_messages_received_total", "Messages received.", self.messages_received);
        let _ = writeln!(
            out,
            "# HELP raft_http_proposals_inflight Accepted proposals waiting to be applied.\n\
             # TYPE raft_http_proposals_inflight gauge\nraft_http_proposals_inflight {}",
            self.proposals_inflight
        );
        let mut histogram = |name: &str, help: &str, h: &HistogramSnapshot, scale: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            h.render(out, name, "", scale);
        };
        histogram(
            "raft_http_propose_batch_size",
            "Proposals stepped per node-task round.",
            &self.propose_batch,
            1.0,
        );
        histogram(
            "raft_http_storage_batch_entries",
            "Entries per storage write.",
            &self.storage_batch_entries,
            1.0,
        );
        histogram("raft_http_fsync_seconds", "Storage write + fdatasync latency.", &self.fsync_us, 1e6);
        histogram(
            "raft_http_append_seconds",
            "Leader proposal latency, stepped to applied.",
            &self.append_us,
            1e6,
        );
        histogram("raft_http_peer_batch_messages", "Messages per request to a peer.", &self.peer_batch, 1.0);
        let name = "raft_http_peer_rtt_seconds";
        let _ =
            writeln!(out, "# HELP {name} Round trip of one request of messages.\n# TYPE {name} histogram");
        for (peer, h) in &self.peer_rtt_us {
            h.render(out, name, &format!("peer=\"{peer}\""), 1e6);
        }
    }

    /// Appends the node-state gauges as Prometheus text: `raft_term`,
    /// `raft_role{role}`, `raft_leader_id`, `raft_commit_index`,
    /// `raft_applied_index`.
    pub fn render_state(&self, out: &mut String) {
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        gauge("raft_term", "Current Raft term.", self.term);
        gauge("raft_leader_id", "The leader this node knows of (0 = none).", self.leader.unwrap_or(0));
        gauge("raft_commit_index", "Highest log index known committed.", self.commit_index);
        gauge("raft_applied_index", "Highest log index applied.", self.applied_index);
        let _ = writeln!(out, "# HELP raft_role Current role (1 for the role held).\n# TYPE raft_role gauge");
        for (name, role) in
            [("follower", Role::Follower), ("candidate", Role::Candidate), ("leader", Role::Leader)]
        {
            let _ = writeln!(out, "raft_role{{role=\"{name}\"}} {}", u64::from(self.role == role));
        }
    }

    /// Everything as Prometheus text: [`MetricsSnapshot::render_state`] then
    /// [`MetricsSnapshot::render_prometheus`].
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        self.render_state(&mut out);
        self.render_prometheus(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_quantiles_and_text() {
        let metrics = Metrics::new();
        for us in [40, 90, 90, 700, 3_000, 20_000_000] {
            metrics.0.fsync.record(us);
        }
        metrics.peer_rtt(2).record(120);
        let snap = metrics.snapshot();
        assert_eq!(snap.fsync_us.count(), 6);
        assert_eq!(snap.fsync_us.quantile(0.5), 100);
        assert_eq!(snap.fsync_us.quantile(1.0), u64::MAX);
        let text = snap.to_prometheus();
        assert!(text.contains("raft_http_fsync_seconds_bucket{le=\"0.0001\"} 3"), "{text}");
        assert!(text.contains("raft_http_fsync_seconds_bucket{le=\"+Inf\"} 6"), "{text}");
        assert!(text.contains("raft_http_peer_rtt_seconds_bucket{peer=\"2\",le=\"0.00025\"} 1"), "{text}");
        assert!(text.contains("raft_role{role=\"follower\"} 1"), "{text}");
    }
}
