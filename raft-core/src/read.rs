//! Linearizable reads without writing to the log (dissertation section 6.4):
//! ReadIndex, confirmed by one batched round of leadership confirmations,
//! and leases that skip the round while a quorum's recent acknowledgement
//! guarantees no other leader can exist.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::message::{Index, NodeId};

/// The driver's name for a read; echoed in [`crate::Action::ReadReady`].
pub type ReadId = u64;

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadPolicy {
    /// ReadIndex: the leader confirms it still leads with a heartbeat round
    /// acknowledged by a quorum. Safe under any clock behaviour.
    #[default]
    Linearizable,
    /// Served by the leader without a round while its lease holds: no round
    /// trip, but correct only if every node's tick rate stays within
    /// [`crate::Config::lease_drift_ticks`] of the leader's over an election
    /// timeout. Falls back to ReadIndex when the lease has lapsed.
    Lease,
}

/// Why a read could not be confirmed. The driver should retry elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No leader is known.
    #[error("no leader known")]
    NoLeader,
    /// The leader that was asked stepped down or changed.
    #[error("leader lost before the read was confirmed")]
    LeaderLost,
    /// No confirmation arrived within an election timeout.
    #[error("read timed out")]
    Timeout,
    /// Too many reads are pending (`reads_pending_max`).
    #[error("too many pending reads")]
    TooManyPending,
}

/// Who asked for a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// This node's driver.
    Local(ReadId),
    /// A follower that forwarded the read.
    Remote(NodeId, ReadId),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub(crate) origin: Origin,
    pub(crate) index: Index,
    /// The confirmation round that must be acknowledged by a quorum.
    pub(crate) round: u64,
}

/// The leader's read bookkeeping.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadQueue {
    /// Reads that arrived before an entry of this term committed.
    pub(crate) awaiting_commit: VecDeque<(Origin, ReadPolicy)>,
    /// Reads with a read index, waiting for their round.
    pub(crate) awaiting_round: VecDeque<PendingRead>,
    /// The last round started.
    pub(crate) round_started: u64,
    /// The highest round acknowledged by a quorum.
    pub(crate) round_confirmed: u64,
    /// Tick at which each unconfirmed round was started (round, tick).
    pub(crate) round_ticks: VecDeque<(u64, u64)>,
    /// The lease holds while the leader's tick count is below this.
    pub(crate) lease_until: u64,
}

impl ReadQueue {
    pub(crate) fn len(&self) -> usize {
        self.awaiting_commit.len() + self.awaiting_round.len()
    }

    /// Whether a round is in flight.
    pub(crate) fn round_in_flight(&self) -> bool {
        self.round_started > self.round_confirmed
    }

    /// Registers a read at `index`; it rides the next round to start.
    pub(crate) fn push(&mut self, origin: Origin, index: Index) {
        let round = self.round_started + 1;
        self.awaiting_round.push_back(PendingRead { origin, index, round });
    }

    /// Whether some read waits for a round not started yet.
    pub(crate) fn needs_round(&self) -> bool {
        self.awaiting_round.back().is_some_and(|r| r.round > self.round_started)
    }

    pub(crate) fn start_round(&mut self, now: u64) -> u64 {
        self.round_started += 1;
        self.round_ticks.push_back((self.round_started, now));
        self.round_started
    }

    /// A quorum acknowledged `round`: extends the lease and returns the reads
    /// it confirms.
    pub(crate) fn confirm(&mut self, round: u64, lease_ticks: u64) -> Vec<PendingRead> {
        if round <= self.round_confirmed {
            return Vec::new();
        }
        self.round_confirmed = round;
        while let Some(&(r, tick)) = self.round_ticks.front() {
            if r > round {
                break;
            }
            if r == round {
                self.lease_until = self.lease_until.max(tick + lease_ticks);
            }
            self.round_ticks.pop_front();
        }
        let ready = self.awaiting_round.iter().take_while(|r| r.round <= round).count();
        self.awaiting_round.drain(..ready).collect()
    }

    /// Everything pending, for failing it when leadership is lost.
    pub(crate) fn drain_all(&mut self) -> Vec<Origin> {
        let mut all: Vec<Origin> = self.awaiting_commit.drain(..).map(|(o, _)| o).collect();
        all.extend(self.awaiting_round.drain(..).map(|r| r.origin));
        *self = ReadQueue::default();
        all
    }
}

/// A follower's reads forwarded to the leader: (id, ticks waited).
#[derive(Clone, Debug, Default)]
pub(crate) struct Forwarded {
    pub(crate) reads: VecDeque<(ReadId, u32)>,
}

impl Forwarded {
    pub(crate) fn take(&mut self, id: ReadId) -> bool {
        match self.reads.iter().position(|&(r, _)| r == id) {
            Some(i) => {
                self.reads.remove(i);
                true
            }
            None => false,
        }
    }

    /// Ages every read by one tick; returns those past `timeout`.
    pub(crate) fn tick(&mut self, timeout: u32) -> Vec<ReadId> {
        let mut expired = Vec::new();
        self.reads.retain_mut(|(id, age)| {
            *age += 1;
            let keep = *age < timeout;
            if !keep {
                expired.push(*id);
            }
            keep
        });
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_batch_into_the_next_round() {
        let mut q = ReadQueue::default();
        q.push(Origin::Local(1), 5);
        assert!(q.needs_round());
        let r1 = q.start_round(100);
        q.push(Origin::Local(2), 6);
        q.push(Origin::Local(3), 6);
        assert!(q.needs_round(), "reads during a round wait for the next one");
        assert!(q.confirm(r1, 10).iter().map(|r| r.origin).eq([Origin::Local(1)]));
        assert_eq!(q.lease_until, 110);
        let r2 = q.start_round(104);
        assert_eq!(q.confirm(r2, 10).len(), 2);
        assert_eq!(q.lease_until, 114);
        assert!(q.confirm(r1, 10).is_empty(), "a stale confirmation confirms nothing");
    }

    #[test]
    fn forwarded_reads_time_out() {
        let mut f = Forwarded::default();
        f.reads.push_back((7, 0));
        assert!(f.tick(2).is_empty());
        assert_eq!(f.tick(2), vec![7]);
        assert!(!f.take(7));
    }
}
