//! `raft-sim`: sweep random seeds, replay one, or run the paper's scenarios.
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
