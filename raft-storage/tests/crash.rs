//! A real process appends with fsync and reports each durable index; the
//! parent kills it with SIGKILL at random moments and checks that every
//! reported index survived.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use raft_core::HardState;
use raft_storage::{Options, Storage};

const CHILD_ENV: &str = "RAFT_STORAGE_CRASH_CHILD_DIR";

/// The child: appends batches forever, printing `durable <index>` after
/// each `write_batch` returns. Does nothing when run as a normal test.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let options = Options::default().segment_size_max(16 << 10);
    let (mut storage, recovered) = open(dir.as_ref(), &options).unwrap();
    let mut last = recovered.restored.snapshot.index + recovered.restored.entries.len() as u64;
    let term = recovered.restored.hard_state.term + 1;
    storage.write_batch(&[hard_state(term, Some(1))]).unwrap();
    println!("durable {last}");
    loop {
        let n = last % 3 + 1;
        let batch = [append(last + 1..=last + n, term), append(last + n + 1..=last + n + 1, term)];
        storage.write_batch(&batch).unwrap();
        last += n + 1;
        if last % 97 < 4 {
            storage.save_snapshot(&meta(last, term), format!("upto {last}").as_bytes()).unwrap();
        }
        println!("durable {last}");
    }
}

// SIGKILL at random moments never loses an index that was reported durable.
#[test]
fn sigkill_never_loses_a_reported_durable_index() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut reported = 0;
    let mut term = 0;
    for round in 0..8 {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a random number of reports; sometimes before the first.
        let kill_after = if round % 4 == 0 { 0 } else { rand() % 300 };
        let mut seen = 0;
        while seen < kill_after {
            let Some(line) = lines.next() else { break };
            if let Some(index) = line.unwrap().strip_prefix("durable ") {
                reported = reported.max(index.parse::<u64>().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Whatever it printed before dying was durable too.
        for line in lines {
            if let Some(index) = line.unwrap().strip_prefix("durable ") {
                reported = reported.max(index.parse::<u64>().unwrap());
            }
        }

        let (storage, recovered) = open(dir.path(), &Options::default()).unwrap();
        let r = &recovered.restored;
        let last = r.snapshot.index + r.entries.len() as u64;
        assert!(last >= reported, "round {round}: reported {reported} durable, recovered up to {last}");
        for (offset, e) in r.entries.iter().enumerate() {
            assert_eq!(e.index, r.snapshot.index + 1 + offset as u64);
            assert_eq!(e, &entry(e.index, e.term), "round {round}: entry {} damaged", e.index);
        }
        if let Some((meta, data)) = storage.read_snapshot().unwrap() {
            assert_eq!(data, format!("upto {}", meta.index).into_bytes());
        }
        assert!(r.hard_state.term >= term);
        term = r.hard_state.term;
        assert_eq!(r.hard_state, HardState { term, vote: (term > 0).then_some(1) });
    }
    assert!(reported > 0, "the child never reported anything");
}
