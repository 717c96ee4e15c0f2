//! The run's trace: a running hash of every event (to prove two runs are the
//! same, bit for bit) and, on request, one readable line per event.

use std::collections::VecDeque;

use raft_core::{AppendResult, Body, Message};

use crate::event::Time;

/// What to do with trace lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// Only hash (the fast path: no formatting at all).
    Off,
    /// Print every line to stdout.
    Print,
    /// Keep the last `n` lines (for failure reports).
    Keep(usize),
}

/// Trace state of one run.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: u64,
    mode: TraceMode,
    lines: VecDeque<String>,
}

#[inline]
pub(crate) fn mix(h: u64, x: u64) -> u64 {
    (h.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// A digest of a message's trace-relevant fields.
#[inline]
pub fn message_digest(m: &Message) -> u64 {
    let mut h = mix(mix(m.from, m.to), m.term);
    h = match &m.body {
        Body::RequestVote { last_log_index, last_log_term, .. } => {
            mix(mix(h ^ 1, *last_log_index), *last_log_term)
        }
        Body::RequestVoteResponse { granted } => mix(h ^ 2, u64::from(*granted)),
        Body::AppendEntries { prev_index, prev_term, entries, commit } => {
            mix(mix(mix(mix(h ^ 3, *prev_index), *prev_term), entries.len() as u64), *commit)
        }
        Body::AppendEntriesResponse(AppendResult::Success { match_index }) => mix(h ^ 4, *match_index),
        Body::AppendEntriesResponse(AppendResult::Reject { rejected_prev, hint }) => {
            mix(mix(mix(h ^ 5, *rejected_prev), hint.index), hint.term)
        }
        _ => h ^ 6,
    };
    h
}

impl Trace {
    /// A trace in `mode`.
    pub fn new(mode: TraceMode) -> Self {
        Trace { hash: 0xcbf2_9ce4_8422_2325, mode, lines: VecDeque::new() }
    }

    /// Records one event: `digest` always, `line` only if lines are wanted.
    #[inline]
    pub fn record(&mut self, now: Time, digest: u64, line: impl FnOnce() -> String) {
        self.hash = mix(mix(self.hash, now), digest);
        match self.mode {
            TraceMode::Off => {}
            TraceMode::Print => {
                let l = line();
                if !l.is_empty() {
                    println!("t={now} {l}");
                }
            }
            TraceMode::Keep(n) => {
                let l = line();
                if l.is_empty() {
                    return;
                }
                if self.lines.len() == n {
                    self.lines.pop_front();
                }
                self.lines.push_back(format!("t={now} {l}"));
            }
        }
    }

    /// Whether lines are being produced.
    pub fn wants_lines(&self) -> bool {
        self.mode != TraceMode::Off
    }

    /// The hash of everything recorded so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }
}
