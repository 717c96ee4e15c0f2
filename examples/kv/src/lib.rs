//! The pure parsers of raft-kv's client API, in a library target so that
//! `fuzz/` (target `kv_api`) can reach them; the `raft-kv` binary's server
//! calls them. Each returns the value or the message of a 400 Bad Request.
//!
//! ```
//! let topology = raft_kv::parse_topology(br#"{"voters":[{"id":1,"address":"a:1"}]}"#).unwrap();
//! assert_eq!(topology.voters[&1], "a:1");
//! assert_eq!(raft_kv::parse_transfer(br#"{"to":2}"#), Ok(2));
//! ```
#![forbid(unsafe_code)]

pub mod certs;

use std::collections::HashMap;

use raft_core::{ReadPolicy, Topology};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct MemberJson {
    id: u64,
    address: String,
}

/// The body of `PUT /v1/cluster`: the shape `GET /v1/cluster` returns
/// (its other fields are ignored, so a GET can be edited and PUT back).
#[derive(Debug, Deserialize)]
struct TopologyJson {
    voters: Vec<MemberJson>,
    #[serde(default)]
    learners: Vec<MemberJson>,
}

/// The body of `PUT /v1/cluster` as a complete, valid topology.
pub fn parse_topology(body: &[u8]) -> Result<Topology, String> {
    let json: TopologyJson = serde_json::from_slice(body).map_err(|e| {
        format!("expected {{\"voters\":[{{\"id\":1,\"address\":\"http://host:port\"}},...],\"learners\":[...]}}: {e}")
    })?;
    let mut topology = Topology::default();
    for (members, into) in [(json.voters, &mut topology.voters), (json.learners, &mut topology.learners)] {
        for member in members {
            if into.insert(member.id, member.address).is_some() {
                return Err(format!("node {} is listed twice", member.id));
            }
        }
    }
    topology.validate().map_err(|e| e.to_string())?;
    Ok(topology)
}

#[derive(Debug, Deserialize)]
struct TransferJson {
    to: u64,
}

/// The body of `POST /v1/cluster/transfer-leader`: the target node's id.
pub fn parse_transfer(body: &[u8]) -> Result<u64, String> {
    serde_json::from_slice::<TransferJson>(body)
        .map(|request| request.to)
        .map_err(|e| format!("expected {{\"to\": id}}: {e}"))
}

/// The query of a write (`PUT`, `DELETE`): its `?cas=N`, the only parameter.
pub fn parse_cas(query: &HashMap<String, String>) -> Result<Option<u64>, String> {
    if let Some(name) = query.keys().find(|name| *name != "cas") {
        return Err(format!("unknown parameter {name:?} for a write"));
    }
    match query.get("cas") {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| format!("cas must be a modify index, not {text:?}")),
    }
}

/// The query of a `GET`: its `?consistency=`, the only parameter. `None`
/// is a stale read (no Raft round).
pub fn parse_consistency(query: &HashMap<String, String>) -> Result<Option<ReadPolicy>, String> {
    let policy = match query.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Some(ReadPolicy::Linearizable),
        Some("lease") => Some(ReadPolicy::Lease),
        Some("stale") => None,
        Some(other) => {
            return Err(format!("consistency must be linearizable, lease or stale, not {other:?}"))
        }
    };
    if let Some(name) = query.keys().find(|k| *k != "consistency") {
        return Err(format!("unknown parameter {name:?}"));
    }
    Ok(policy)
}

/// The `Idempotency-Key` header of a write, if any: 1 to 256 visible ASCII
/// characters.
pub fn parse_idempotency_key(value: Option<&axum::http::HeaderValue>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 256 => Ok(Some(key.to_owned())),
            _ => Err("Idempotency-Key must be 1 to 256 visible ASCII characters".into()),
        },
    }
}
