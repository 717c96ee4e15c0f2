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
    /// Seed of the PRNG that randomizes election timeouts. Mixed with `id`,
    /// so nodes of one cluster may share it.
    pub seed: u64,
}

impl Config {
    /// Defaults for `id`: with 10 ms ticks, elections after 150-300 ms and
    /// heartbeats every 30 ms.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_ticks_min: 15,
            election_ticks_max: 30,
            heartbeat_ticks: 3,
            entries_per_message_max: 1024,
            bytes_per_message_max: 1 << 20,
            inflight_messages_max: 64,
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
        ];
        for (field, break_it) in cases {
            let mut c = Config::new(1);
            break_it(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }
}
