//! The simulated network: per-message latency, loss, duplication, long
//! delays (reordering), and partitions as a directed link matrix.

use std::fmt;

use raft_core::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::event::Time;

/// Rates and delays of the network, drawn from the seed for random runs.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Minimum one-way latency.
    pub latency_min_ms: Time,
    /// Maximum one-way latency (uniform in between).
    pub latency_max_ms: Time,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Probability a message is held back up to `long_delay_max_ms` (reordering).
    pub long_delay: f64,
    /// Upper bound of a long delay.
    pub long_delay_max_ms: Time,
}

impl NetConfig {
    /// A reliable network with 1-5 ms latency.
    pub fn reliable() -> Self {
        NetConfig {
            latency_min_ms: 1,
            latency_max_ms: 5,
            loss: 0.0,
            duplicate: 0.0,
            long_delay: 0.0,
            long_delay_max_ms: 0,
        }
    }

    /// The faults turned off, latency kept.
    pub fn healed(&self) -> Self {
        NetConfig { loss: 0.0, duplicate: 0.0, long_delay: 0.0, ..self.clone() }
    }
}

impl fmt::Display for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "latency={}-{}ms loss={:.0}% dup={:.0}% long-delay={:.0}%<={}ms",
            self.latency_min_ms,
            self.latency_max_ms,
            self.loss * 100.0,
            self.duplicate * 100.0,
            self.long_delay * 100.0,
            self.long_delay_max_ms
        )
    }
}

/// A partition shape (paper-independent; the Jepsen vocabulary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// One node cut off in both directions.
    Isolate(NodeId),
    /// Two sides that cannot talk: the given minority and everyone else.
    Split(Vec<NodeId>),
    /// Node i talks only to its ring neighbours: every node sees a
    /// majority (for 5 nodes), but no two see the same one.
    MajoritiesRing,
    /// Two halves joined only through one bridge node.
    Bridge(NodeId),
    /// Asymmetric: the node can send but receives nothing.
    DeafNode(NodeId),
    /// Asymmetric: the node receives but nothing it sends arrives.
    MuteNode(NodeId),
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Isolate(n) => write!(f, "isolate {n}"),
            Partition::Split(m) => write!(f, "split {m:?} | rest"),
            Partition::MajoritiesRing => write!(f, "majorities ring"),
            Partition::Bridge(n) => write!(f, "bridge via {n}"),
            Partition::DeafNode(n) => write!(f, "{n} deaf (receives nothing)"),
            Partition::MuteNode(n) => write!(f, "{n} mute (sends nothing)"),
        }
    }
}

/// Links between `n` nodes (ids `1..=n`) plus the message fault model.
#[derive(Clone, Debug)]
pub struct Network {
    n: usize,
    /// `blocked[from * n + to]` (0-based).
    blocked: Vec<bool>,
    /// Current fault rates.
    pub config: NetConfig,
}

impl Network {
    /// A fully connected network.
    pub fn new(n: usize, config: NetConfig) -> Self {
        Network { n, blocked: vec![false; n * n], config }
    }

    fn at(&self, from: NodeId, to: NodeId) -> usize {
        (from as usize - 1) * self.n + (to as usize - 1)
    }

    /// Makes room for nodes up to id `n` (new nodes are connected to all).
    pub fn grow(&mut self, n: usize) {
        if n <= self.n {
            return;
        }
        let mut blocked = vec![false; n * n];
        for from in 0..self.n {
            for to in 0..self.n {
                blocked[from * n + to] = self.blocked[from * self.n + to];
            }
        }
        self.n = n;
        self.blocked = blocked;
    }

    /// Whether `from` can currently reach `to`.
    pub fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        !self.blocked[self.at(from, to)]
    }

    /// Blocks or unblocks one direction.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, up: bool) {
        let i = self.at(from, to);
        self.blocked[i] = !up;
    }

    /// Whether any link is down.
    pub fn is_partitioned(&self) -> bool {
        self.blocked.iter().any(|&b| b)
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    /// Cuts `node` off in both directions (on top of existing cuts).
    pub fn isolate(&mut self, node: NodeId) {
        for other in 1..=self.n as NodeId {
            if other != node {
                self.set_link(node, other, false);
                self.set_link(other, node, false);
            }
        }
    }

    /// Reconnects `node` in both directions.
    pub fn reconnect(&mut self, node: NodeId) {
        for other in 1..=self.n as NodeId {
            self.set_link(node, other, true);
            self.set_link(other, node, true);
        }
    }

    /// Nodes talk iff they are in the same group; unlisted nodes form a
    /// group of their own each.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        let group_of = |id: NodeId| groups.iter().position(|g| g.contains(&id));
        for a in 1..=self.n as NodeId {
            for b in 1..=self.n as NodeId {
                let same = a == b || (group_of(a).is_some() && group_of(a) == group_of(b));
                self.set_link(a, b, same);
            }
        }
    }

    /// Replaces the current cuts with `p`.
    pub fn apply(&mut self, p: &Partition) {
        self.heal();
        let n = self.n as NodeId;
        match p {
            Partition::Isolate(x) => self.isolate(*x),
            Partition::Split(minority) => {
                let rest: Vec<NodeId> = (1..=n).filter(|i| !minority.contains(i)).collect();
                self.partition(&[minority, &rest]);
            }
            Partition::MajoritiesRing => {
                let reach = (self.n / 2) as NodeId;
                for a in 1..=n {
                    for b in 1..=n {
                        let d = (a + n - b) % n;
                        let dist = d.min(n - d);
                        self.set_link(a, b, dist <= reach / 2 + (reach % 2) || a == b);
                    }
                }
            }
            Partition::Bridge(x) => {
                let others: Vec<NodeId> = (1..=n).filter(|i| i != x).collect();
                let (left, right) = others.split_at(others.len() / 2);
                let mut l = left.to_vec();
                l.push(*x);
                let mut r = right.to_vec();
                r.push(*x);
                for a in 1..=n {
                    for b in 1..=n {
                        let up = a == b
                            || (l.contains(&a) && l.contains(&b))
                            || (r.contains(&a) && r.contains(&b));
                        self.set_link(a, b, up);
                    }
                }
            }
            Partition::DeafNode(x) => {
                for o in (1..=n).filter(|o| o != x) {
                    self.set_link(o, *x, false);
                }
            }
            Partition::MuteNode(x) => {
                for o in (1..=n).filter(|o| o != x) {
                    self.set_link(*x, o, false);
                }
            }
        }
    }

    /// A random partition shape for `n` nodes.
    pub fn random_partition(n: usize, rng: &mut ChaCha8Rng) -> Partition {
        let node = rng.gen_range(1..=n as NodeId);
        match rng.gen_range(0..6) {
            0 => Partition::Isolate(node),
            1 => {
                let size = rng.gen_range(1..=n.div_ceil(2).max(1));
                let mut ids: Vec<NodeId> = (1..=n as NodeId).collect();
                for i in (1..ids.len()).rev() {
                    let j = rng.gen_range(0..=i);
                    ids.swap(i, j);
                }
                ids.truncate(size.min(n - 1).max(1));
                ids.sort_unstable();
                Partition::Split(ids)
            }
            2 => Partition::MajoritiesRing,
            3 => Partition::Bridge(node),
            4 => Partition::DeafNode(node),
            _ => Partition::MuteNode(node),
        }
    }

    /// Draws a one-way latency (with an occasional long delay).
    pub fn latency(&self, rng: &mut ChaCha8Rng) -> Time {
        let c = &self.config;
        let mut d = rng.gen_range(c.latency_min_ms..=c.latency_max_ms.max(c.latency_min_ms));
        if c.long_delay > 0.0 && rng.gen_bool(c.long_delay) {
            d += rng.gen_range(0..=c.long_delay_max_ms);
        }
        d
    }

    /// Whether to lose this message.
    pub fn lose(&self, rng: &mut ChaCha8Rng) -> bool {
        self.config.loss > 0.0 && rng.gen_bool(self.config.loss)
    }

    /// Whether to deliver this message twice.
    pub fn duplicate(&self, rng: &mut ChaCha8Rng) -> bool {
        self.config.duplicate > 0.0 && rng.gen_bool(self.config.duplicate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(net: &Network, n: NodeId, a: NodeId) -> usize {
        (1..=n).filter(|&b| net.link_up(a, b)).count()
    }

    #[test]
    fn ring_gives_every_node_a_majority_and_bridge_joins_halves() {
        let mut net = Network::new(5, NetConfig::reliable());
        net.apply(&Partition::MajoritiesRing);
        for a in 1..=5 {
            assert_eq!(reach(&net, 5, a), 3, "node {a}");
        }
        assert!(!net.link_up(1, 3));
        net.apply(&Partition::Bridge(3));
        assert_eq!(reach(&net, 5, 3), 5);
        assert!(!net.link_up(1, 4));
        net.apply(&Partition::DeafNode(2));
        assert!(net.link_up(2, 1) && !net.link_up(1, 2));
        net.apply(&Partition::Split(vec![1, 2]));
        assert!(net.link_up(1, 2) && !net.link_up(2, 3) && net.link_up(3, 5));
    }
}
