//! A 3-node Raft cluster in one process, driven by std threads and mpsc
//! channels: elect a leader, commit increments to a replicated counter,
//! stop the leader, elect another, commit more, restart the old leader and
//! check that every node agrees. See the library documentation
//! (`embed_example`) for how the driver works.
//!
//! Run with `cargo run -p embed-example`. Exits 0 with
//! `all nodes agree: counter = 20`, or 1 with the reason the run failed.

use std::process::ExitCode;

use embed_example::{run, Options};

fn main() -> ExitCode {
    match run(&Options::default()) {
        Ok(outcome) => {
            println!(
                "leaders: node {} then node {}; took {} ms",
                outcome.first_leader,
                outcome.second_leader,
                outcome.elapsed.as_millis()
            );
            println!("all nodes agree: counter = {}", outcome.counter);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("embed-example failed: {error}");
            ExitCode::FAILURE
        }
    }
}
