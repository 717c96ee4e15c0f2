//! Helpers shared by the process tests.
// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Mutex;

/// A free port on 127.0.0.1, chosen by the OS, and never one this process
/// handed out before: a port given to a node that has not bound it yet is
/// free again to the OS, and two nodes given the same port fail to start.
pub(crate) fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// The last `lines` lines of a node's log, for a failure message.
pub(crate) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
