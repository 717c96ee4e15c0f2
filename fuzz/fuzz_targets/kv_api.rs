//! raft-kv's client API parsers (`examples/kv/src/lib.rs`): the same bytes
//! as a `PUT /v1/cluster` topology body, a transfer-leader body, a query
//! string (decoded by axum's `Query` as the server does, then `?cas=` and
//! `?consistency=`), and an `Idempotency-Key` header value. Each must give
//! a value or a message, never panic; an accepted topology must be valid.
#![no_main]

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(topology) = raft_kv::parse_topology(data) {
        assert_eq!(topology.validate(), Ok(()), "accepted an invalid topology");
    }
    let _ = raft_kv::parse_transfer(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(uri) = format!("/v1/kv/key?{text}").parse::<Uri>() {
            if let Ok(Query(query)) = Query::<HashMap<String, String>>::try_from_uri(&uri) {
                let _ = raft_kv::parse_cas(&query);
                let _ = raft_kv::parse_consistency(&query);
            }
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        if let Ok(Some(key)) = raft_kv::parse_idempotency_key(Some(&value)) {
            assert!((1..=256).contains(&key.len()), "accepted a key of {} bytes", key.len());
        }
    }
});
