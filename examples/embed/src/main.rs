//! raft-core driven by plain std threads and channels.
//!
//! Not built yet (issue 9).
fn main() {
    eprintln!("not built yet: see the open issue for this crate");
    std::process::exit(2);
}
