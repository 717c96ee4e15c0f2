use bytes::Bytes;
use raft_core::{Body, Config, Message, NodeId, Payload, Restored, Role, Term};

use super::{elect, ensure, no_violation, Outcome, Scenario};
use crate::sim::{restored_with_log, Sim, SimOptions};

pub(crate) const SCENARIOS: &[Scenario] = &[
    ("b1_figure6_commit_and_state", b1_figure6_commit_and_state),
    ("b2_figure8_old_term_never_committed_by_counting", b2_figure8_old_term_never_committed_by_counting),
    (
        "b2_figure8_current_term_entry_commits_and_blocks_s5",
        b2_figure8_current_term_entry_commits_and_blocks_s5,
    ),
    ("b3_figure9_up_to_date_check_blocks_s5", b3_figure9_up_to_date_check_blocks_s5),
];

const X: u8 = 0;
const Y: u8 = 1;

fn scripted(restored: Vec<Restored>, config: Config) -> Sim {
    let mut opts = SimOptions::scripted(restored.len());
    opts.restored = Some(restored);
    // The figures replay the paper's section 5 rules: no PreVote, no
    // CheckQuorum (both on by default, tested in the lab and random runs).
    opts.config = Config { pre_vote: false, check_quorum: false, ..config };
    opts.trace = super::trace_mode();
    Sim::new(opts)
}

fn terms_of(sim: &Sim, id: NodeId) -> Vec<Term> {
    let n = sim.node(id);
    (1..=n.last_index()).map(|i| n.term_at(i).unwrap_or(0)).collect()
}

fn carries_term(m: &Message, term: Term) -> bool {
    matches!(&m.body, Body::AppendEntries { entries, .. } if entries.iter().any(|e| e.term == term))
}

fn is_append(m: &Message) -> bool {
    matches!(m.body, Body::AppendEntries { .. })
}

/// Figure 6: a leader of term 3 with log `1 1 1 2 3 3 3 3` and followers
/// holding through 5, 8, 2 and 7 has commit index 7 and state {x:5, y:7}.
///
/// raft-core appends a no-op when a leader is elected (paper section 8), so
/// entry 5 is the term-3 leader's no-op instead of the figure's `x<-0` (which
/// `x<-5` overwrites anyway); every index, term and the outcome are as in
/// the figure.
// Paper 5.3, figure 6
fn b1_figure6_commit_and_state() -> Outcome {
    let w = Sim::write_command;
    let prefix = [w(X, 3), w(Y, 1), w(Y, 9), w(X, 2)];
    let full = restored_with_log(5, &[1, 1, 1, 2], &prefix, 2);
    let short = restored_with_log(5, &[1, 1], &prefix, 2);
    let mut sim = scripted(vec![full.clone(), full.clone(), full.clone(), short, full], Config::new(1));
    sim.isolate(4);
    elect(&mut sim, 1, |_| true)?;
    ensure(sim.node(1).term() == 3, || format!("leader term {}", sim.node(1).term()))?;
    sim.isolate(2);
    for cmd in [w(Y, 7), w(X, 5)] {
        sim.propose(1, cmd).map_err(|e| e.to_string())?;
        sim.deliver_all();
    }
    sim.isolate(5);
    sim.propose(1, w(X, 4)).map_err(|e| e.to_string())?;
    sim.deliver_all();
    no_violation(&sim)?;
    let lens: Vec<u64> = (1..=5).map(|id| sim.node(id).last_index()).collect();
    ensure(lens == [8, 5, 8, 2, 7], || format!("log lengths {lens:?}"))?;
    ensure(terms_of(&sim, 1) == [1, 1, 1, 2, 3, 3, 3, 3], || format!("leader log {:?}", terms_of(&sim, 1)))?;
    ensure(sim.node(1).commit_index() == 7, || format!("commit {}", sim.node(1).commit_index()))?;
    let kv = sim.server(1).kv();
    ensure(kv.get(X).0 == 5 && kv.get(Y).0 == 7, || format!("state x={:?} y={:?}", kv.get(X), kv.get(Y)))
}

/// Figure 8 (a)-(c) shared by both endings: returns the simulation with S1
/// leading term 4, entry (2, term 2) on S1-S4 and S1's commit below 2.
fn figure8_until_c() -> Result<Sim, String> {
    let mut config = Config::new(1);
    // One entry per message, so (2,2) can travel without (3,4).
    config.entries_per_message_max = 1;
    let r = restored_with_log(5, &[1], &[], 1);
    let mut sim = scripted(vec![r; 5], config);
    // (a) S1 leads term 2; its entry 2 reaches only S2.
    elect(&mut sim, 1, |m| !is_append(m) || m.to == 2)?;
    ensure(sim.node(1).term() == 2 && terms_of(&sim, 2) == [1, 2], || "figure 8 (a) not reached".into())?;
    // (b) S1 crashes; S5 wins term 3 with S3, S4 and appends (2,3) locally.
    sim.crash(1);
    elect(&mut sim, 5, |m| !is_append(m))?;
    ensure(sim.node(5).term() == 3 && terms_of(&sim, 5) == [1, 3], || "figure 8 (b) not reached".into())?;
    // (c) S5 crashes; S1 restarts and wins term 4 (S2, S3 vote for it).
    sim.crash(5);
    sim.restart(1);
    // (2,2) may reach S3 and S4 (which do not have it), but no entry of
    // term 4 may reach anyone: S3 and S4 see an AppendEntries carrying
    // (3,4) only while they would reject it.
    let mut has_two = [false; 6];
    let keep = move |m: &Message| {
        if !is_append(m) {
            return true;
        }
        if m.to == 2 {
            return false;
        }
        if let Body::AppendEntries { prev_index, entries, .. } = &m.body {
            if *prev_index == 1 && entries.first().is_some_and(|e| e.term == 2) {
                has_two[m.to as usize] = true;
                return true;
            }
            return !has_two[m.to as usize] || !carries_term(m, 4);
        }
        true
    };
    let mut keep = keep;
    elect(&mut sim, 1, &mut keep)?;
    ensure(sim.node(1).term() == 4, || format!("S1 leads term {}", sim.node(1).term()))?;
    for _ in 0..10 {
        sim.tick(1);
        sim.deliver_where(&mut keep);
    }
    no_violation(&sim)?;
    let holders = (1..=4).filter(|&id| sim.node(id).term_at(2) == Some(2)).count();
    ensure(holders >= 3, || format!("(2,2) on {holders} nodes"))?;
    // Commit is volatile: S1 restarted at 0 and may relearn 1, never 2.
    ensure(sim.node(1).commit_index() < 2, || {
        format!("S1 committed {} by counting old-term replicas (figure 8 (c))", sim.node(1).commit_index())
    })?;
    Ok(sim)
}

/// Figure 8, ending (d): the term-2 entry on a majority was never committed,
/// so S5 may overwrite it, and nobody ever applied it.
// Paper 5.4.2, figure 8 (a)-(d)
fn b2_figure8_old_term_never_committed_by_counting() -> Outcome {
    let mut sim = figure8_until_c()?;
    // (d) S1 crashes; S5 restarts and wins term 5 with S2, S3, S4.
    sim.crash(1);
    sim.restart(5);
    elect(&mut sim, 5, |_| true)?;
    for _ in 0..6 {
        sim.tick(5);
        sim.deliver_all();
    }
    no_violation(&sim)?;
    for id in 2..=5 {
        ensure(sim.node(id).term_at(2) == Some(3), || format!("S{id} log {:?}", terms_of(&sim, id)))?;
    }
    ensure(sim.node(5).commit_index() >= 2, || "S5 did not commit".into())
}

/// Figure 8, ending (e): once S1 replicates an entry of its own term to a
/// majority, it commits (with everything before it) and S5 can never lead.
// Paper 5.4.2, figure 8 (e)
fn b2_figure8_current_term_entry_commits_and_blocks_s5() -> Outcome {
    let mut sim = figure8_until_c()?;
    sim.isolate(4);
    for _ in 0..20 {
        sim.tick(1);
        sim.deliver_all();
    }
    ensure(sim.node(1).commit_index() == 3, || format!("S1 commit {}", sim.node(1).commit_index()))?;
    sim.crash(1);
    sim.restart(5);
    sim.reconnect(4);
    for _ in 0..4 {
        sim.campaign(5);
        sim.deliver_all();
        ensure(sim.node(5).role() != Role::Leader, || "S5 won despite lacking committed entry 3".into())?;
    }
    no_violation(&sim)
}

/// Figure 9 / 5.4.3: S1 commits e on {S1,S2,S3}; S5 lacking e campaigns
/// with S3 and S4 reachable: S3 refuses, S5 cannot lead.
// Paper 5.4.3, figure 9
fn b3_figure9_up_to_date_check_blocks_s5() -> Outcome {
    let mut sim = scripted(vec![restored_with_log(5, &[], &[], 0); 5], Config::new(1));
    elect(&mut sim, 1, |_| true)?;
    sim.partition(&[&[1, 2, 3], &[4, 5]]);
    let (_, index) = sim.propose(1, Bytes::from_static(b"e")).map_err(|e| e.to_string())?;
    sim.deliver_all();
    ensure(sim.node(1).commit_index() >= index, || "e did not commit on {S1,S2,S3}".into())?;
    ensure(sim.node(5).entry(index).is_none(), || "S5 holds e".into())?;
    sim.partition(&[&[3, 4, 5]]);
    for _ in 0..3 {
        sim.campaign(5);
        sim.deliver_all();
        ensure(sim.node(5).role() != Role::Leader, || "S5 leads without e".into())?;
        ensure(sim.node(3).hard_state().vote != Some(5), || "S3 voted for S5".into())?;
    }
    ensure(
        matches!(sim.node(3).entry(index).map(|e| &e.payload), Some(Payload::Command(c)) if &c[..] == b"e"),
        || "S3 lost e".into(),
    )?;
    no_violation(&sim)
}
