//! Linearizability of a client history: Wing & Gong's search with Lowe's
//! memoization, run per key (P-compositionality: a history is linearizable
//! iff each key's sub-history is).
//!
//! Each key is a register holding a `u64` (0 initially). Compare-and-set on
//! a modify index is checked as compare-and-set on the value: values written
//! are unique per operation and each write gets a unique modify index, so
//! "modify index = m" and "value = the value written at m" are the same test.
//! [`check_mod_indexes`] verifies that correspondence separately.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::event::Time;

/// One register operation with what the client observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// A read that returned `value`.
    Read {
        /// The value read.
        value: u64,
    },
    /// A write that took effect.
    Write {
        /// The value written.
        value: u64,
    },
    /// A write whose outcome is unknown (may or may not have taken effect).
    WriteUnknown {
        /// The value written.
        value: u64,
    },
    /// A compare-and-set that succeeded.
    CasOk {
        /// The expected value.
        expect: u64,
        /// The value installed.
        new: u64,
    },
    /// A compare-and-set that did not match.
    CasFail {
        /// The expected value.
        expect: u64,
    },
    /// A compare-and-set whose outcome is unknown.
    CasUnknown {
        /// The expected value.
        expect: u64,
        /// The value it would install.
        new: u64,
    },
}

impl RegOp {
    /// The sequential specification: the state after `self` from `state`,
    /// or `None` if `self` cannot have happened in `state`.
    #[inline]
    pub fn step(&self, state: u64) -> Option<u64> {
        match *self {
            RegOp::Read { value } => (value == state).then_some(state),
            RegOp::Write { value } | RegOp::WriteUnknown { value } => Some(value),
            RegOp::CasOk { expect, new } => (expect == state).then_some(new),
            RegOp::CasFail { expect } => (expect != state).then_some(state),
            RegOp::CasUnknown { expect, new } => Some(if expect == state { new } else { state }),
        }
    }
}

/// A completed (or abandoned) client operation on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client.
    pub client: u32,
    /// Which key.
    pub key: u8,
    /// When the client invoked it.
    pub call: Time,
    /// When the response arrived; `None`: unknown outcome (never answered).
    pub ret: Option<Time>,
    /// What it did and saw.
    pub op: RegOp,
    /// The modify index the response reported with the value, if any.
    pub mod_index: Option<u64>,
}

/// Outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinResult {
    /// Every key's history is linearizable.
    Ok,
    /// Some key's history is not.
    Violation {
        /// The key.
        key: u8,
        /// Why, with the operations involved.
        detail: String,
    },
    /// The search budget ran out before an answer.
    Inconclusive {
        /// The key whose search was abandoned.
        key: u8,
    },
}

impl fmt::Display for LinResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinResult::Ok => write!(f, "linearizable"),
            LinResult::Violation { key, detail } => write!(f, "key {key} not linearizable: {detail}"),
            LinResult::Inconclusive { key } => write!(f, "key {key}: search budget exhausted"),
        }
    }
}

/// Checks a whole history, key by key. `budget` bounds the search steps per key.
pub fn check_history(history: &[Operation], budget: u64) -> LinResult {
    if let Err((key, detail)) = check_mod_indexes(history) {
        return LinResult::Violation { key, detail };
    }
    let mut by_key: BTreeMap<u8, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key).or_default().push(*op);
    }
    for (key, ops) in by_key {
        match check_register(&ops, budget) {
            Some(true) => {}
            Some(false) => {
                let mut detail = format!("{} operations admit no linearization", ops.len());
                let shown = ops.iter().take(12);
                for o in shown {
                    detail.push_str(&format!("\n    {o:?}"));
                }
                return LinResult::Violation { key, detail };
            }
            None => return LinResult::Inconclusive { key },
        }
    }
    LinResult::Ok
}

/// Values are unique per write, so each observed value must always come with
/// the same modify index and vice versa.
pub fn check_mod_indexes(history: &[Operation]) -> Result<(), (u8, String)> {
    let mut value_mod: HashMap<(u8, u64), u64> = HashMap::new();
    let mut mod_value: HashMap<(u8, u64), u64> = HashMap::new();
    let mut ordered: Vec<&Operation> = history.iter().collect();
    ordered.sort_by_key(|o| (o.call, o.client));
    for o in ordered {
        let Some(m) = o.mod_index else { continue };
        let value = match o.op {
            RegOp::Read { value } | RegOp::Write { value } => value,
            RegOp::CasOk { new, .. } => new,
            _ => continue,
        };
        let v_m = *value_mod.entry((o.key, value)).or_insert(m);
        let m_v = *mod_value.entry((o.key, m)).or_insert(value);
        if v_m != m || m_v != value || (m == 0) != (value == 0) {
            return Err((o.key, format!("value {value} seen with modify index {m} and {v_m}: {o:?}")));
        }
    }
    Ok(())
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// Wing & Gong's backtracking search over one register's history, with
/// Lowe's cache of (linearized set, state) pairs already explored.
/// `Some(true)`: linearizable; `Some(false)`: not; `None`: over budget.
pub fn check_register(ops: &[Operation], budget: u64) -> Option<bool> {
    let m = ops.len();
    if m == 0 {
        return Some(true);
    }
    // Events: node 1 + 2i is op i's call, node 2 + 2i its return.
    let mut events: Vec<(Time, u8, usize)> = Vec::with_capacity(2 * m);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call, 0, i));
        // Calls sort before returns at the same instant: treat as concurrent.
        events.push((o.ret.unwrap_or(Time::MAX), 1, i));
    }
    events.sort_unstable();
    let nodes = 2 * m + 1;
    let mut next = vec![NIL; nodes];
    let mut prev = vec![NIL; nodes];
    let node_of = |kind: u8, i: usize| 1 + 2 * i + kind as usize;
    let mut last = HEAD;
    for &(_, kind, i) in &events {
        let n = node_of(kind, i);
        next[last] = n;
        prev[n] = last;
        last = n;
    }
    let is_call = |n: usize| (n - 1).is_multiple_of(2);
    let op_of = |n: usize| (n - 1) / 2;
    let ret_of = |call: usize| call + 1;

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, c: usize| {
        next[prev[c]] = next[c];
        if next[c] != NIL {
            prev[next[c]] = prev[c];
        }
        let r = ret_of(c);
        next[prev[r]] = next[r];
        if next[r] != NIL {
            prev[next[r]] = prev[r];
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, c: usize| {
        let r = ret_of(c);
        next[prev[r]] = r;
        if next[r] != NIL {
            prev[next[r]] = r;
        }
        next[prev[c]] = c;
        if next[c] != NIL {
            prev[next[c]] = c;
        }
    };

    let words = m.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state = 0u64;
    let mut entry = next[HEAD];
    let mut steps = 0u64;
    while next[HEAD] != NIL {
        steps += 1;
        if steps > budget {
            return None;
        }
        if is_call(entry) {
            let i = op_of(entry);
            if let Some(new_state) = ops[i].op.step(state) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    lift(&mut next, &mut prev, entry);
                    entry = next[HEAD];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // A return whose call is not linearized yet: backtrack.
            let Some((call, old_state)) = stack.pop() else { return Some(false) };
            let i = op_of(call);
            state = old_state;
            linearized[i / 64] &= !(1 << (i % 64));
            unlift(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn op(client: u32, call: Time, ret: Option<Time>, op: RegOp) -> Operation {
        Operation { client, key: 0, call, ret, op, mod_index: None }
    }

    #[test]
    fn known_linearizable_histories() {
        // Concurrent write and read: the read may see either value.
        let h = [
            op(1, 0, Some(10), RegOp::Write { value: 1 }),
            op(2, 5, Some(15), RegOp::Read { value: 1 }),
            op(3, 6, Some(16), RegOp::Read { value: 0 }),
        ];
        assert_eq!(check_register(&h, 1 << 20), Some(true));
        // An unknown write may take effect at any time after its call, or never.
        let h = [
            op(1, 0, None, RegOp::WriteUnknown { value: 7 }),
            op(2, 5, Some(6), RegOp::Read { value: 0 }),
            op(2, 7, Some(8), RegOp::Read { value: 7 }),
        ];
        assert_eq!(check_register(&h, 1 << 20), Some(true));
        let h = [
            op(1, 0, Some(2), RegOp::Write { value: 3 }),
            op(2, 3, Some(4), RegOp::CasOk { expect: 3, new: 4 }),
            op(1, 5, Some(6), RegOp::CasFail { expect: 3 }),
            op(2, 7, Some(8), RegOp::Read { value: 4 }),
        ];
        assert_eq!(check_register(&h, 1 << 20), Some(true));
    }

    #[test]
    fn known_non_linearizable_histories() {
        // A stale read after a completed write.
        let h =
            [op(1, 0, Some(10), RegOp::Write { value: 1 }), op(2, 11, Some(12), RegOp::Read { value: 0 })];
        assert_eq!(check_register(&h, 1 << 20), Some(false));
        // Two reads that disagree on the order of two writes.
        let h = [
            op(1, 0, Some(10), RegOp::Write { value: 1 }),
            op(2, 0, Some(10), RegOp::Write { value: 2 }),
            op(3, 11, Some(12), RegOp::Read { value: 1 }),
            op(3, 13, Some(14), RegOp::Read { value: 2 }),
        ];
        assert_eq!(check_register(&h, 1 << 20), Some(false));
        // Both CASes from the same expected value succeed.
        let h = [
            op(1, 0, Some(10), RegOp::CasOk { expect: 0, new: 1 }),
            op(2, 0, Some(10), RegOp::CasOk { expect: 0, new: 2 }),
        ];
        assert_eq!(check_register(&h, 1 << 20), Some(false));
        // Modify indexes must match values.
        let mut a = op(1, 0, Some(1), RegOp::Write { value: 1 });
        a.mod_index = Some(5);
        let mut b = op(1, 2, Some(3), RegOp::Read { value: 1 });
        b.mod_index = Some(6);
        assert!(matches!(check_history(&[a, b], 1 << 20), LinResult::Violation { .. }));
    }

    /// A random linearizable history: `clients` clients, each op takes effect
    /// at a random instant inside its interval.
    pub(crate) fn random_history(seed: u64, ops_count: usize, clients: u32) -> Vec<Operation> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut free_at = vec![0u64; clients as usize];
        // (linearization point, client, call, ret, kind, arg)
        let mut planned = Vec::new();
        for n in 0..ops_count {
            let c = rng.gen_range(0..clients) as usize;
            let call = free_at[c] + rng.gen_range(0..5);
            let ret = call + rng.gen_range(1..20);
            free_at[c] = ret + 1;
            let at = rng.gen_range(call..=ret) * 1000 + n as u64;
            planned.push((at, c as u32, call, ret, rng.gen_range(0..3), n as u64 + 1));
        }
        planned.sort_unstable();
        let mut state = 0;
        let mut h = Vec::new();
        for (_, c, call, ret, kind, arg) in planned {
            let o = match kind {
                0 => RegOp::Read { value: state },
                1 => {
                    state = arg;
                    RegOp::Write { value: arg }
                }
                _ if rng.gen_bool(0.5) => {
                    let e = state;
                    state = arg;
                    RegOp::CasOk { expect: e, new: arg }
                }
                _ => RegOp::CasFail { expect: arg + 1_000_000 },
            };
            h.push(op(c, call, Some(ret), o));
        }
        h.sort_by_key(|o| o.call);
        h
    }

    #[test]
    fn random_linearizable_histories_pass_and_corrupted_ones_fail() {
        for seed in 0..20 {
            let h = random_history(seed, 200, 5);
            assert_eq!(check_register(&h, 1 << 24), Some(true), "seed {seed}");
            // Corrupt one read to a value never written.
            let mut bad = h.clone();
            if let Some(r) = bad.iter_mut().find(|o| matches!(o.op, RegOp::Read { .. })) {
                r.op = RegOp::Read { value: 999_999_999 };
                assert_eq!(check_register(&bad, 1 << 24), Some(false), "seed {seed}");
            }
        }
    }
}
