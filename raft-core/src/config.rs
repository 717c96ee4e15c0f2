//! Node configuration: identity, timing in ticks, and a limit on everything.

use crate::error::ConfigError;
use crate::message::NodeId;

/// How a node behaves. Every window and queue has a `_max` here, and
/// [`Config::validate`] says precisely which value is wrong and why.
///
/// Times are in ticks ([`crate::Input::Tick`]); the driver chooses how long a
/// tick is (10 ms in `raft-http`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: NodeId,
    /// Election timeouts are drawn uniformly from
    /// `[election_ticks_min, election_ticks_max)` (paper section 5.2).
    pub election_ticks_min: u32,
    /// Exclusive upper bound of the election timeout.
    pub election_ticks_max: u32,
    /// A leader sends heartbeats every `heartbeat_ticks`.
    pub heartbeat_ticks: u32,
    /// Most entries in one AppendEntries message.
    pub entries_per_message_max: usize,
    /// Most entry bytes in one AppendEntries message (at least one entry is
    /// always sent, so a single command may not exceed this).
    pub bytes_per_message_max: usize,
    /// Most AppendEntries messages in flight to one follower in the
    /// pipelined replicate state.
    pub inflight_messages_max: usize,
    /// Most bytes of entries in flight to one follower.
    pub inflight_bytes_max: usize,
    /// Most bytes of appended but uncommitted entries on a leader; a
    /// proposal beyond it is rejected ([`crate::ProposeError::UncommittedLimit`]).
    pub uncommitted_bytes_max: usize,
    /// Most reads waiting for confirmation on one node.
    pub reads_pending_max: usize,
    /// PreVote (dissertation 9.6): campaign only after a majority says it
    /// would vote, so a partitioned node does not inflate terms.
    pub pre_vote: bool,
    /// CheckQuorum: a leader that has not heard from a quorum within an
    /// election timeout steps down; followers that heard from a leader within
    /// `election_ticks_min` ignore vote requests (paper section 6).
    pub check_quorum: bool,
    /// Lease reads assume no node's clock runs more than this many ticks
    /// slower than the leader's over `election_ticks_min` ticks; the lease is
    /// `election_ticks_min - lease_drift_ticks` ticks from the start of the
    /// last round a quorum acknowledged.
    pub lease_drift_ticks: u32,
    /// Ask the application for a snapshot ([`crate::Action::SnapshotNeeded`])
    /// once this many entries were applied since the last one.
    pub snapshot_entries_max: u64,
    /// ...or once this many bytes of entries were applied since the last one.
    pub snapshot_bytes_max: u64,
    /// After a snapshot, keep this many entries before it in memory so that
    /// slightly slow followers get entries rather than a whole snapshot.
    pub log_tail_entries: u64,
    /// A configuration change waits at most this long for new voters to
    /// catch up (as learners) before failing with
    /// [`crate::ConfigChangeError::CatchUpTimeout`].
    pub catch_up_ticks_max: u32,
    /// Seed of the PRNG that randomizes election timeouts. Mixed with `id`,
    /// so nodes of one cluster may share it.
    pub seed: u64,
}

impl Config {
    /// Defaults for `id`: with 10 ms ticks, elections after 150-300 ms and
    /// heartbeats every 30 ms; PreVote and CheckQuorum on.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_ticks_min: 15,
            election_ticks_max: 30,
            heartbeat_ticks: 3,
            entries_per_message_max: 1024,
            bytes_per_message_max: 1 << 20,
            inflight_messages_max: 64,
            inflight_bytes_max: 8 << 20,
            uncommitted_bytes_max: 64 << 20,
            reads_pending_max: 8192,
            pre_vote: true,
            check_quorum: true,
            lease_drift_ticks: 3,
            catch_up_ticks_max: 1000,
            snapshot_entries_max: 100_000,
            snapshot_bytes_max: 256 << 20,
            log_tail_entries: 1000,
            seed: 0,
        }
    }

    /// Checks every field, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field: &'static str, reason: String| Err(ConfigError { field, reason });
        if self.id == 0 {
            return fail("id", "0 is reserved for \"no node\"".into());
        }
        if self.heartbeat_ticks == 0 {
            return fail("heartbeat_ticks", "must be at least 1".into());
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return fail(
                "election_ticks_min",
                format!(
                    "{} must exceed heartbeat_ticks ({}) or followers time out between heartbeats",
                    self.election_ticks_min, self.heartbeat_ticks
                ),
            );
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return fail(
                "election_ticks_max",
                format!(
                    "{} must exceed election_ticks_min ({}): timeouts are drawn from [min, max) to avoid split votes",
                    self.election_ticks_max, self.election_ticks_min
                ),
            );
        }
        if self.entries_per_message_max == 0 {
            return fail("entries_per_message_max", "must be at least 1".into());
        }
        if self.bytes_per_message_max == 0 {
            return fail("bytes_per_message_max", "must be at least 1".into());
        }
        if self.inflight_messages_max == 0 {
            return fail("inflight_messages_max", "must be at least 1".into());
        }
        if self.inflight_bytes_max < self.bytes_per_message_max {
            return fail(
                "inflight_bytes_max",
                format!(
                    "{} is below bytes_per_message_max ({}): a full message could never be sent",
                    self.inflight_bytes_max, self.bytes_per_message_max
                ),
            );
        }
        if self.uncommitted_bytes_max < self.bytes_per_message_max {
            return fail(
                "uncommitted_bytes_max",
                format!(
                    "{} is below bytes_per_message_max ({}): a largest command could never be proposed",
                    self.uncommitted_bytes_max, self.bytes_per_message_max
                ),
            );
        }
        if self.snapshot_entries_max == 0 {
            return fail("snapshot_entries_max", "must be at least 1".into());
        }
        if self.snapshot_bytes_max == 0 {
            return fail("snapshot_bytes_max", "must be at least 1".into());
        }
        if self.catch_up_ticks_max == 0 {
            return fail("catch_up_ticks_max", "must be at least 1".into());
        }
        if self.reads_pending_max == 0 {
            return fail("reads_pending_max", "must be at least 1".into());
        }
        if self.lease_drift_ticks >= self.election_ticks_min {
            return fail(
                "lease_drift_ticks",
                format!(
                    "{} leaves no lease: it must be below election_ticks_min ({})",
                    self.lease_drift_ticks, self.election_ticks_min
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(1).validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_field() {
        type Breaker = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("id", Box::new(|c| c.id = 0)),
            ("heartbeat_ticks", Box::new(|c| c.heartbeat_ticks = 0)),
            ("election_ticks_min", Box::new(|c| c.election_ticks_min = c.heartbeat_ticks)),
            ("election_ticks_max", Box::new(|c| c.election_ticks_max = c.election_ticks_min)),
            ("entries_per_message_max", Box::new(|c| c.entries_per_message_max = 0)),
            ("bytes_per_message_max", Box::new(|c| c.bytes_per_message_max = 0)),
            ("inflight_messages_max", Box::new(|c| c.inflight_messages_max = 0)),
            ("inflight_bytes_max", Box::new(|c| c.inflight_bytes_max = 1)),
            ("uncommitted_bytes_max", Box::new(|c| c.uncommitted_bytes_max = 1)),
            ("reads_pending_max", Box::new(|c| c.reads_pending_max = 0)),
            ("lease_drift_ticks", Box::new(|c| c.lease_drift_ticks = c.election_ticks_min)),
        ];
        for (field, break_it) in cases {
            let mut c = Config::new(1);
            break_it(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }
}
