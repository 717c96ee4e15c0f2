//! Replication throughput of the bare protocol: 3 nodes in one thread,
//! messages delivered by hand, 16-byte commands. Each iteration proposes a
//! batch of B commands on the leader and delivers messages until every node
//! has applied all of them. Criterion reports time per iteration; divide by
//! B for ns per entry (the throughput line reports entries/s).
//!
//! Like a real deployment, the harness lets the core compact its log: when
//! a node asks for a snapshot it reports one taken at once (the trivial
//! state machine has nothing to save), so memory stays bounded instead of
//! the benchmark measuring page faults of an ever-growing log.

use std::collections::VecDeque;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_core::{Action, Config, Input, Membership, Message, Node, Restored, Role};

struct Cluster {
    nodes: Vec<Node>,
    queue: VecDeque<Message>,
    actions: Vec<Action>,
    applied: [u64; 3],
}

impl Cluster {
    fn new() -> Self {
        let membership = Membership::with_voters([(1, "a"), (2, "b"), (3, "c")]);
        let nodes = (1..=3)
            .map(|id| {
                let mut config = Config::new(id);
                config.entries_per_message_max = 4096;
                config.inflight_messages_max = 256;
                config.snapshot_entries_max = 10_000;
                config.log_tail_entries = 1_000;
                Node::new(config, Restored::new_cluster(membership.clone())).unwrap()
            })
            .collect();
        let mut c = Cluster { nodes, queue: VecDeque::new(), actions: Vec::new(), applied: [0; 3] };
        while c.nodes[0].role() != Role::Leader {
            c.step(0, Input::Tick);
            c.deliver_all();
        }
        c
    }

    fn step(&mut self, i: usize, input: Input) {
        self.actions.clear();
        self.nodes[i].step_into(input, &mut self.actions);
        let mut snapshot = None;
        for a in self.actions.drain(..) {
            match a {
                Action::Send(m) => self.queue.push_back(m),
                Action::SnapshotNeeded { meta } => snapshot = Some(meta.index),
                Action::Apply(entries) => {
                    if let Some(e) = entries.last() {
                        self.applied[i] = e.index;
                    }
                }
                _ => {}
            }
        }
        if let Some(index) = snapshot {
            self.nodes[i].step_into(Input::SnapshotTaken { index }, &mut self.actions);
            self.actions.clear();
        }
    }

    fn deliver_all(&mut self) {
        while let Some(m) = self.queue.pop_front() {
            let to = (m.to - 1) as usize;
            self.step(to, Input::Message(m));
        }
    }

    fn round(&mut self, commands: Vec<Bytes>) {
        self.step(0, Input::Propose(commands));
        self.deliver_all();
        let last = self.nodes[0].last_index();
        debug_assert!(self.applied.iter().all(|&a| a == last), "{:?} != {last}", self.applied);
    }
}

fn replication(c: &mut Criterion) {
    let command = Bytes::from_static(&[7u8; 16]);
    let mut group = c.benchmark_group("replication");
    for batch in [1usize, 10, 100, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("entries_per_round", batch), &batch, |b, &batch| {
            let mut cluster = Cluster::new();
            b.iter(|| {
                let commands = vec![command.clone(); batch];
                cluster.round(black_box(commands));
            });
            let last = cluster.nodes[0].last_index();
            assert!(cluster.applied.iter().all(|&a| a == last), "not all applied");
        });
    }
    group.finish();
}

criterion_group!(benches, replication);
criterion_main!(benches);
