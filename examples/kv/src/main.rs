//! raft-kv: a replicated key-value store over HTTP.
//!
//! Not built yet (issue 9).
fn main() {
    eprintln!("not built yet: see the open issue for this crate");
    std::process::exit(2);
}
