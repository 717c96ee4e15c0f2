//! Turning the recorded history into raft-sim's operation model, checking it,
//! and shrinking a violation to a small window.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use raft_sim::linearizability::{check_mod_indexes, check_register, Operation, RegOp};

use crate::workload::{Kind, Outcome, Record};

/// The checker's view of a record; `None` for operations that constrain
/// nothing (failed ones, reads without an answer).
pub(crate) fn to_operation(r: &Record) -> Option<Operation> {
    let (op, ret) = match (r.kind, r.outcome) {
        (_, Outcome::Fail) | (Kind::Read, Outcome::Unknown) => return None,
        (Kind::Read, Outcome::Ok) => (RegOp::Read { value: r.value }, Some(r.ret)),
        (Kind::Write, Outcome::Ok) => (RegOp::Write { value: r.value }, Some(r.ret)),
        (Kind::Write, Outcome::Unknown) => (RegOp::WriteUnknown { value: r.value }, None),
        (Kind::Cas, Outcome::Ok) if r.mismatch => (RegOp::CasFail { expect: r.expect }, Some(r.ret)),
        (Kind::Cas, Outcome::Ok) => (RegOp::CasOk { expect: r.expect, new: r.value }, Some(r.ret)),
        (Kind::Cas, Outcome::Unknown) => (RegOp::CasUnknown { expect: r.expect, new: r.value }, None),
    };
    Some(Operation { client: r.client, key: r.key, call: r.call, ret, op, mod_index: r.mod_index })
}

/// Per key: `Ok(ops)`, or the violation text with the smallest window found.
#[derive(Debug)]
pub(crate) struct KeyResult {
    pub(crate) key: u8,
    pub(crate) ops: usize,
    pub(crate) verdict: Verdict,
}

#[derive(Debug)]
pub(crate) enum Verdict {
    Linearizable,
    Violation(String),
    Inconclusive,
}

pub(crate) fn check(records: &[Record], budget: u64) -> Vec<KeyResult> {
    let mut by_key: BTreeMap<u8, Vec<(Operation, usize)>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(op) = to_operation(r) {
            by_key.entry(r.key).or_default().push((op, i));
        }
    }
    let mut results = Vec::new();
    for (key, mut ops) in by_key {
        ops.sort_by_key(|(o, _)| (o.call, o.client));
        let plain: Vec<Operation> = ops.iter().map(|(o, _)| *o).collect();
        let verdict = if let Err((_, detail)) = check_mod_indexes(&plain) {
            Verdict::Violation(format!("modify index and value disagree: {detail}"))
        } else {
            match check_register(&plain, budget) {
                Some(true) => Verdict::Linearizable,
                None => Verdict::Inconclusive,
                Some(false) => Verdict::Violation(shrink(records, &ops, budget)),
            }
        };
        results.push(KeyResult { key, ops: ops.len(), verdict });
    }
    results
}

/// The shortest prefix (by invocation) that is not linearizable, then reads
/// and failed cas dropped one by one while it stays so (dropping them only
/// removes constraints, so the rest still proves the violation); shows what
/// is left around the point of failure.
fn shrink(records: &[Record], ops: &[(Operation, usize)], budget: u64) -> String {
    let bad = |set: &[(Operation, usize)]| {
        let plain: Vec<Operation> = set.iter().map(|(o, _)| *o).collect();
        check_register(&plain, budget) == Some(false)
    };
    let (mut lo, mut hi) = (1, ops.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if bad(&ops[..mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut kept: Vec<(Operation, usize)> = ops[..hi].to_vec();
    let last = kept.last().map(|(o, _)| o.call).unwrap_or(0);
    // Try dropping constraining-only operations, newest first except the last.
    let mut trials = 0;
    let mut i = kept.len().saturating_sub(1);
    while i > 0 && trials < 400 {
        i -= 1;
        if matches!(kept[i].0.op, RegOp::Read { .. } | RegOp::CasFail { .. }) {
            trials += 1;
            let mut candidate = kept.clone();
            candidate.remove(i);
            if bad(&candidate) {
                kept = candidate;
            }
        }
    }
    // Window: from the earliest remaining read or failed cas (what must be
    // explained) to the last invocation, plus the writes of the values seen.
    let first = kept
        .iter()
        .filter(|(o, _)| matches!(o.op, RegOp::Read { .. } | RegOp::CasFail { .. }))
        .map(|(o, _)| o.call)
        .min()
        .unwrap_or(last);
    let seen: HashSet<u64> = kept
        .iter()
        .filter_map(|(o, _)| match o.op {
            RegOp::Read { value } => Some(value),
            RegOp::CasOk { expect, .. } | RegOp::CasFail { expect } => Some(expect),
            _ => None,
        })
        .collect();
    let window: Vec<&(Operation, usize)> = kept
        .iter()
        .filter(|(o, _)| {
            let ends = o.ret.unwrap_or(u64::MAX);
            let written = match o.op {
                RegOp::Write { value } | RegOp::WriteUnknown { value } => Some(value),
                RegOp::CasOk { new, .. } | RegOp::CasUnknown { new, .. } => Some(new),
                _ => None,
            };
            (ends >= first && o.call <= last) || written.is_some_and(|v| seen.contains(&v))
        })
        .collect();
    let mut text = format!(
        "the first {hi} of {} operations (by invocation) are already not linearizable; \
         {} operations left after dropping reads that do not matter; the window \
         ({:.3}s .. {:.3}s, plus the writes of the values read), {} operations:",
        ops.len(),
        kept.len(),
        first as f64 / 1e6,
        last as f64 / 1e6,
        window.len()
    );
    for (_, index) in window.iter().take(60) {
        let _ = write!(text, "\n    {}", describe(&records[*index]));
    }
    if window.len() > 60 {
        let _ = write!(text, "\n    ... {} more", window.len() - 60);
    }
    text
}

pub(crate) fn describe(r: &Record) -> String {
    let ret = if r.outcome == Outcome::Unknown {
        "    ?    ".to_owned()
    } else {
        format!("{:9.3}", r.ret as f64 / 1e6)
    };
    let what = match r.kind {
        Kind::Read => format!("read  -> {}", r.value),
        Kind::Write => format!("write {}", r.value),
        Kind::Cas => {
            format!("cas {} -> {}{}", r.expect, r.value, if r.mismatch { " (mismatch)" } else { "" })
        }
    };
    let index = r.mod_index.map(|m| format!(" @{m}")).unwrap_or_default();
    format!(
        "[{:9.3} .. {ret}] client {:2} via n{} k{}: {what}{index} {:?} {}",
        r.call as f64 / 1e6,
        r.client,
        r.node + 1,
        r.key,
        r.outcome,
        r.note
    )
}

/// Every acknowledged write must be accounted for at the end: its modify
/// index is not after the key's final one, and if it carries no index, its
/// value was read by someone or is the final value.
pub(crate) fn acknowledged_writes(records: &[Record], finals: &BTreeMap<u8, (u64, u64)>) -> Vec<String> {
    let read_values: HashSet<(u8, u64)> = records
        .iter()
        .filter(|r| r.kind == Kind::Read && r.outcome == Outcome::Ok)
        .map(|r| (r.key, r.value))
        .chain(
            records
                .iter()
                .filter(|r| r.kind == Kind::Cas && r.outcome == Outcome::Ok)
                .map(|r| (r.key, r.expect)),
        )
        .collect();
    let mut problems = Vec::new();
    for r in records {
        if r.kind == Kind::Read || r.outcome != Outcome::Ok || r.mismatch {
            continue;
        }
        let (final_value, final_index) = finals.get(&r.key).copied().unwrap_or((0, 0));
        let lost = match r.mod_index {
            Some(index) => index > final_index,
            None => final_value != r.value && !read_values.contains(&(r.key, r.value)),
        };
        if lost {
            problems.push(format!(
                "acknowledged write never seen (key k{} ends as {final_value} @{final_index}): {}",
                r.key,
                describe(r)
            ));
        }
    }
    problems
}
