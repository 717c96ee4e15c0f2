//! Shared by the runtime benchmarks (`cluster`, `inproc`).

use bytes::Bytes;
use raft_http::StateMachine;

/// Counts applied commands; answers nothing.
pub(crate) struct Counter(pub(crate) u64);

impl StateMachine for Counter {
    fn apply(&mut self, _index: u64, _command: &[u8]) -> Bytes {
        self.0 += 1;
        Bytes::new()
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }

    fn restore(&mut self, data: &[u8]) {
        self.0 = data.try_into().map(u64::from_le_bytes).unwrap_or(0);
    }
}

/// The environment variable `name` parsed, or `default`.
pub(crate) fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median (the mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
