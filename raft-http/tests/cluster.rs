//! Real clusters over HTTP on 127.0.0.1 (OS-assigned ports) and in-process
//! channels, with data directories in temp dirs. Every wait is a poll under
//! a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft_core::{Config, Membership, NodeId};
use raft_http::session::{SessionCommand, SessionResponse};
use raft_http::{
    ChannelNetwork, Error, Handoff, HttpConnect, HttpOptions, Options, RaftHandle, RaftNode, Session,
    SessionOptions, Sessions, ShutdownOptions, StateMachine, Transport, CLUSTER_HEADER,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(15);

/// Records every applied command; answers `ok:<command>`.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Bytes>>>);

impl Recorder {
    fn commands(&self) -> Vec<Bytes> {
        self.0.lock().unwrap().clone()
    }
}

impl StateMachine for Recorder {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Bytes {
        self.0.lock().unwrap().push(Bytes::copy_from_slice(command));
        let mut response = b"ok:".to_vec();
        response.extend_from_slice(command);
        response.into()
    }

    fn snapshot(&mut self) -> Vec<u8> {
        postcard::to_allocvec(&*self.0.lock().unwrap()).unwrap()
    }

    fn restore(&mut self, data: &[u8]) {
        *self.0.lock().unwrap() = postcard::from_bytes(data).unwrap();
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("deadline passed waiting for {what}"),
    }
}

/// Polls until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

fn http_options() -> HttpOptions {
    let mut options = HttpOptions::new("test-cluster").secret("s3cret");
    options.request_timeout = Duration::from_millis(500);
    options.connect_timeout = Duration::from_millis(200);
    options
}

struct HttpNode {
    id: NodeId,
    addr: SocketAddr,
    handle: RaftHandle,
    recorder: Recorder,
    server: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl HttpNode {
    async fn start(id: NodeId, dir: &Path, membership: &Membership, listener: TcpListener) -> HttpNode {
        let options = Options::new(Config::new(id), dir).initial_membership(membership.clone());
        HttpNode::start_with(options, listener, |recorder| recorder).await
    }

    /// A node with `options`, applying to `machine(recorder)`.
    async fn start_with<M: StateMachine>(
        options: Options,
        listener: TcpListener,
        machine: impl FnOnce(Recorder) -> M,
    ) -> HttpNode {
        let id = options.config.id;
        let addr = listener.local_addr().unwrap();
        let http = http_options();
        let recorder = Recorder::default();
        let handle =
            RaftNode::start(options, machine(recorder.clone()), HttpConnect::new(http.clone()).unwrap())
                .await
                .unwrap();
        let router = Transport::new(handle.clone(), &http).router();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
        HttpNode { id, addr, handle, recorder, server: Some((stop_tx, server)) }
    }

    async fn stop(&mut self) {
        self.handle.shutdown().await;
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            within("the server to stop", server).await.unwrap();
        }
    }
}

async fn http_cluster(dirs: &[tempfile::TempDir]) -> (Vec<HttpNode>, Membership) {
    let (listeners, membership) = http_listeners(dirs.len()).await;
    let mut nodes = Vec::new();
    for (i, (listener, dir)) in listeners.into_iter().zip(dirs).enumerate() {
        nodes.push(HttpNode::start(i as NodeId + 1, dir.path(), &membership, listener).await);
    }
    (nodes, membership)
}

/// Listeners on OS-assigned ports for nodes 1..=n, and their membership.
async fn http_listeners(n: usize) -> (Vec<TcpListener>, Membership) {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let membership = Membership::with_voters(
        listeners.iter().enumerate().map(|(i, l)| (i as NodeId + 1, l.local_addr().unwrap().to_string())),
    );
    (listeners, membership)
}

/// The index (into `handles`) of a leader that all running nodes agree on.
async fn agreed_leader(handles: &[&RaftHandle]) -> usize {
    let mut found = None;
    until("an agreed leader", || {
        let states: Vec<_> = handles.iter().map(|h| *h.leader().borrow()).collect();
        let Some(leader) = states.iter().position(|s| s.is_leader) else { return false };
        let id = handles[leader].id();
        found = Some(leader);
        states.iter().all(|s| s.leader == Some(id))
    })
    .await;
    found.unwrap()
}

/// Proposes on whoever leads, retrying through elections.
async fn propose(handles: &[&RaftHandle], command: &str) -> Bytes {
    within("a proposal to commit", async {
        loop {
            for handle in handles {
                if !handle.leader().borrow().is_leader {
                    continue;
                }
                match handle.propose(command.to_owned()).await {
                    Ok(response) => return response,
                    Err(Error::NotLeader { .. } | Error::NoLeader | Error::ProposalLost | Error::Timeout) => {
                    }
                    Err(e) => panic!("proposal failed: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Three nodes over the in-process channel network, each with a recorder.
async fn channel_cluster(dirs: &[tempfile::TempDir]) -> Vec<(RaftHandle, Recorder)> {
    let membership = Membership::with_voters([(1, "n1"), (2, "n2"), (3, "n3")]);
    let network = ChannelNetwork::new();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let id = i as NodeId + 1;
        let recorder = Recorder::default();
        let options = Options::new(Config::new(id), dir.path()).initial_membership(membership.clone());
        let handle = RaftNode::start(options, recorder.clone(), network.clone()).await.unwrap();
        network.register(id, handle.clone());
        nodes.push((handle, recorder));
    }
    nodes
}

/// Waits (up to 2 s) until `node`'s log starts past `index`: snapshots are
/// taken and saved in the background.
async fn compacted_past(node: &RaftHandle, index: u64) {
    let mut first_index = 0;
    for _ in 0..200 {
        first_index = node.status().await.unwrap().first_index;
        if first_index > index {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the log was never compacted past {index}: it starts at {first_index}");
}

fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n).map(|_| tempfile::tempdir().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_and_replicate_over_http() {
    let dirs = dirs(3);
    let (mut nodes, _) = http_cluster(&dirs).await;
    let handles: Vec<&RaftHandle> = nodes.iter().map(|n| &n.handle).collect();
    agreed_leader(&handles).await;

    for i in 0..5 {
        let response = propose(&handles, &format!("cmd-{i}")).await;
        assert_eq!(response, Bytes::from(format!("ok:cmd-{i}")));
    }
    let expected: Vec<Bytes> = (0..5).map(|i| Bytes::from(format!("cmd-{i}"))).collect();
    for node in &nodes {
        let recorder = node.recorder.clone();
        until("every node to apply all commands", || recorder.commands().len() >= 5).await;
        assert_eq!(node.recorder.commands(), expected, "node {}", node.id);
    }

    // A follower's read barrier goes through the leader and then sees all five.
    let leader = agreed_leader(&handles).await;
    let follower = &nodes[(leader + 1) % 3];
    within("a follower read", follower.handle.read()).await.unwrap();
    assert_eq!(follower.recorder.commands().len(), 5);
    match follower.handle.propose_local("on a follower").await {
        Err(Error::NotLeader { leader_hint }) => assert_eq!(leader_hint, nodes[leader].id),
        other => panic!("a follower accepted a local proposal: {other:?}"),
    }

    let status = nodes[leader].handle.status().await.unwrap();
    assert!(status.commit_index >= 6, "{status:?}");

    // The leader's metrics saw its election, the proposals, the writes and
    // both peers; the follower's, the refused local proposal.
    let metrics = nodes[leader].handle.metrics();
    assert_eq!(metrics.role, raft_core::Role::Leader);
    assert!(metrics.elections_won >= 1 && metrics.term >= 1, "{metrics:?}");
    assert!(metrics.proposals_accepted >= 5 && metrics.commit_index >= 6, "{metrics:?}");
    assert!(metrics.applied_index >= 6 && metrics.proposals_inflight == 0, "{metrics:?}");
    assert!(metrics.fsync_us.count() >= 1 && metrics.append_us.count() >= 5, "{metrics:?}");
    assert_eq!(metrics.peer_rtt_us.len(), 2, "{metrics:?}");
    let text = metrics.to_prometheus();
    assert!(text.contains("raft_role{role=\"leader\"} 1"), "{text}");
    assert!(text.contains("# TYPE raft_http_fsync_seconds histogram"), "{text}");
    assert!(follower.handle.metrics().proposals_rejected >= 1);
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_recovers_its_log_from_disk() {
    let dirs = dirs(3);
    let (mut nodes, membership) = http_cluster(&dirs).await;
    {
        let handles: Vec<&RaftHandle> = nodes.iter().map(|n| &n.handle).collect();
        agreed_leader(&handles).await;
        for i in 0..3 {
            propose(&handles, &format!("before-{i}")).await;
        }
    }
    for node in &nodes {
        let recorder = node.recorder.clone();
        until("every node to apply the first commands", || recorder.commands().len() >= 3).await;
    }

    // Stop a follower; the other two keep committing.
    let victim = nodes.iter().position(|n| !n.handle.leader().borrow().is_leader).unwrap();
    let last_before = nodes[victim].handle.status().await.unwrap().last_index;
    nodes[victim].stop().await;
    {
        let alive: Vec<&RaftHandle> =
            nodes.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, n)| &n.handle).collect();
        for i in 0..2 {
            propose(&alive, &format!("after-{i}")).await;
        }
    }

    // Restart it on the same directory and port with an empty state machine.
    let id = nodes[victim].id;
    let listener = TcpListener::bind(nodes[victim].addr).await.unwrap();
    let restarted = HttpNode::start(id, dirs[victim].path(), &membership, listener).await;
    let status = restarted.handle.status().await.unwrap();
    assert!(status.last_index >= last_before, "log not recovered: {status:?} vs {last_before}");
    assert!(status.term >= 1, "hard state not recovered: {status:?}");
    nodes[victim] = restarted;

    let expected: Vec<Bytes> =
        ["before-0", "before-1", "before-2", "after-0", "after-1"].iter().map(|s| Bytes::from(*s)).collect();
    let recorder = nodes[victim].recorder.clone();
    until("the restarted node to apply everything", || recorder.commands().len() >= 5).await;
    assert_eq!(recorder.commands(), expected);
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_while_the_cluster_commits() {
    let dirs = dirs(3);
    let (mut nodes, _) = http_cluster(&dirs).await;
    let handles: Vec<&RaftHandle> = nodes.iter().map(|n| &n.handle).collect();
    agreed_leader(&handles).await;
    propose(&handles, "first").await;

    let client = reqwest::Client::new();
    let url = format!("http://{}/raft/messages", nodes[0].addr);
    let valid = postcard::to_allocvec(&Vec::<raft_core::Message>::new()).unwrap();
    let post = |body: Vec<u8>, cluster: Option<&str>, auth: Option<&str>| {
        let mut request = client.post(&url).body(body);
        if let Some(cluster) = cluster {
            request = request.header(CLUSTER_HEADER, cluster.to_owned());
        }
        if let Some(auth) = auth {
            request = request.header("authorization", auth.to_owned());
        }
        request.send()
    };

    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(post(valid.clone(), None, None).await.unwrap()), 401);
    assert_eq!(status(post(valid.clone(), Some("other"), Some("Bearer s3cret")).await.unwrap()), 401);
    assert_eq!(status(post(valid.clone(), Some("test-cluster"), Some("Bearer wrong")).await.unwrap()), 401);
    assert_eq!(status(post(valid.clone(), Some("test-cluster"), None).await.unwrap()), 401);
    assert_eq!(status(post(valid.clone(), Some("test-cluster"), Some("Bearer s3cret")).await.unwrap()), 204);

    let bad = post(vec![0xff; 64], Some("test-cluster"), Some("Bearer s3cret")).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let body: serde_json::Value = serde_json::from_slice(&bad.bytes().await.unwrap()).unwrap();
    assert!(body["error"].is_string(), "{body}");

    // Assorted garbage never crashes the node: only 204 (decoded, maybe
    // dropped as addressed elsewhere) or 400.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for len in 0..64usize {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        // Authenticated messages are trusted by design: skip garbage that
        // happens to decode as a real message to this node.
        if let Ok(decoded) = postcard::from_bytes::<Vec<raft_core::Message>>(&garbage) {
            if decoded.iter().any(|m| m.to == nodes[0].id) {
                continue;
            }
        }
        let code = status(post(garbage, Some("test-cluster"), Some("Bearer s3cret")).await.unwrap());
        assert!(code == 204 || code == 400, "garbage answered {code}");
    }

    let huge = post(vec![0; 17 << 20], Some("test-cluster"), Some("Bearer s3cret")).await;
    if let Ok(response) = huge {
        assert_eq!(response.status().as_u16(), 413);
    }

    // The cluster still commits, on every node.
    for i in 0..3 {
        propose(&handles, &format!("later-{i}")).await;
    }
    for node in &nodes {
        let recorder = node.recorder.clone();
        until("every node to apply", || recorder.commands().len() >= 4).await;
    }
    drop(handles);
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_reapplies_its_log_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let membership = Membership::with_voters([(1, "local")]);
    let network = ChannelNetwork::new();
    let recorder = Recorder::default();
    let options = Options::new(Config::new(1), dir.path()).initial_membership(membership.clone());
    let handle = RaftNode::start(options.clone(), recorder.clone(), network.clone()).await.unwrap();
    within("election", handle.leader().wait_for(|s| s.is_leader)).await.unwrap();
    for i in 0..10 {
        assert_eq!(handle.propose(format!("c{i}")).await.unwrap(), Bytes::from(format!("ok:c{i}")));
    }
    handle.shutdown().await;
    assert!(matches!(handle.propose("late").await, Err(Error::Stopped)));

    // initial_membership is ignored now: the directory is not empty.
    let again = Recorder::default();
    let handle = RaftNode::start(options, again.clone(), network).await.unwrap();
    within("re-election", handle.leader().wait_for(|s| s.is_leader)).await.unwrap();
    within("read barrier", handle.read()).await.unwrap();
    assert_eq!(again.commands(), recorder.commands());
    assert_eq!(again.commands().len(), 10);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_cluster_replicates_concurrent_proposals() {
    let dirs = dirs(3);
    let nodes = channel_cluster(&dirs).await;
    let handles: Vec<&RaftHandle> = nodes.iter().map(|(h, _)| h).collect();
    let leader = handles[agreed_leader(&handles).await].clone();

    // Many proposals in flight at once share fsyncs; each gets its own answer.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move { leader.propose(format!("p{i}")).await }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(within("proposal", task).await.unwrap().unwrap(), Bytes::from(format!("ok:p{i}")));
    }
    let reference = nodes[0].1.clone();
    until("node 1 to apply", || reference.commands().len() >= 50).await;
    for (_, recorder) in &nodes {
        let recorder = recorder.clone();
        until("every node to apply", || recorder.commands().len() >= 50).await;
        assert_eq!(recorder.commands(), reference.commands());
    }
    for (handle, _) in &nodes {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_proposals_to_the_leader_over_http() {
    let dirs = dirs(3);
    let (mut nodes, _) = http_cluster(&dirs).await;
    let handles: Vec<&RaftHandle> = nodes.iter().map(|n| &n.handle).collect();
    let leader = agreed_leader(&handles).await;
    drop(handles);

    // Every node, followers included, gets the state machine's response.
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..10 {
            let handle = node.handle.clone();
            tasks.push(tokio::spawn(async move { handle.propose(format!("n{n}-{i}")).await }));
        }
    }
    for task in tasks {
        let response = within("a forwarded proposal", task).await.unwrap().unwrap();
        assert!(response.starts_with(b"ok:n"), "{response:?}");
    }
    for node in &nodes {
        let recorder = node.recorder.clone();
        until("every node to apply all 30", || recorder.commands().len() >= 30).await;
        let mut commands = recorder.commands();
        commands.sort();
        commands.dedup();
        assert_eq!(commands.len(), 30, "a forwarded proposal applied twice or lost on node {}", node.id);
    }

    // Typed errors come back: a command over the core's size limit is
    // refused by the leader, and the follower sees the same error.
    let follower = (leader + 1) % 3;
    let huge = vec![b'x'; (1 << 20) + 1];
    match within("an oversized proposal", nodes[follower].handle.propose(huge)).await {
        Err(Error::Rejected(raft_core::ProposeError::TooLarge { .. })) => {}
        other => panic!("expected TooLarge through the forward, got {other:?}"),
    }

    // The forward route is authenticated like messages.
    let client = reqwest::Client::new();
    let url = format!("http://{}/raft/forward", nodes[leader].addr);
    let refused =
        client.post(&url).header(CLUSTER_HEADER, "test-cluster").body("sneaky").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert!(!nodes[leader].recorder.commands().iter().any(|c| c == "sneaky"));

    // Stop the leader: a follower's proposal waits for the new leader and
    // goes there.
    nodes[leader].stop().await;
    let survivor = &nodes[follower];
    let response = within("a proposal across the failover", async {
        loop {
            match survivor.handle.propose("after").await {
                // The request raced with the old leader's connection closing:
                // the outcome is unknown, and this test may retry.
                Err(Error::Forward(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(response, Bytes::from("ok:after"));
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != leader {
            node.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_network_forwards_proposals() {
    let dirs = dirs(3);
    let nodes = channel_cluster(&dirs).await;
    let handles: Vec<&RaftHandle> = nodes.iter().map(|(h, _)| h).collect();
    let leader = agreed_leader(&handles).await;
    let follower = &nodes[(leader + 1) % 3].0;
    assert_eq!(within("forward", follower.propose("via")).await.unwrap(), Bytes::from("ok:via"));
    for (handle, _) in &nodes {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_leadership_transfer_from_any_node() {
    let dirs = dirs(4);
    let membership = Membership::with_voters([(1, "n1"), (2, "n2"), (3, "n3")]);
    let network = ChannelNetwork::new();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let id = i as NodeId + 1;
        let recorder = Recorder::default();
        let mut options = Options::new(Config::new(id), dir.path());
        if id <= 3 {
            options = options.initial_membership(membership.clone());
        } else {
            // Joining: it knows no one until the configuration reaches it.
            options = options.peers(membership.voters.clone());
        }
        let handle = RaftNode::start(options, recorder.clone(), network.clone()).await.unwrap();
        network.register(id, handle.clone());
        nodes.push((handle, recorder));
    }
    let handles: Vec<&RaftHandle> = nodes.iter().take(3).map(|(h, _)| h).collect();
    let leader = agreed_leader(&handles).await;
    propose(&handles, "before").await;
    // Not a member yet: a read is refused at once, not left to time out.
    match within("a read on the joining node", nodes[3].0.read()).await {
        Err(Error::NotMember) => {}
        other => panic!("expected NotMember, got {other:?}"),
    }
    let follower = &nodes[(leader + 1) % 3].0;

    // Add node 4 through a follower: it catches up, then votes.
    let mut topology = membership.topology();
    topology.voters.insert(4, "n4".into());
    within("adding node 4", follower.set_configuration(topology.clone())).await.unwrap();
    let status = nodes[0].0.status().await.unwrap();
    assert!(status.membership.is_voter(4) && !status.membership.is_joint(), "{status:?}");
    let joined = nodes[3].1.clone();
    until("node 4 to apply the earlier command", || {
        joined.commands().first() == Some(&Bytes::from("before"))
    })
    .await;
    // Asking again for the topology in force is a no-op.
    within("the same topology", nodes[3].0.set_configuration(topology.clone())).await.unwrap();
    // An invalid topology is refused with a typed error, wherever asked.
    let mut invalid = topology.clone();
    invalid.learners.insert(2, "n2".into());
    match within("an invalid change", follower.set_configuration(invalid)).await {
        Err(Error::ConfigChange(raft_core::ConfigChangeError::VoterAndLearner(2))) => {}
        other => panic!("expected VoterAndLearner(2), got {other:?}"),
    }

    // Hand leadership to node 4, asked on yet another node.
    within("transfer to node 4", nodes[(leader + 2) % 3].0.transfer_leadership(4)).await.unwrap();
    let all: Vec<&RaftHandle> = nodes.iter().map(|(h, _)| h).collect();
    assert_eq!(all[agreed_leader(&all).await].id(), 4);
    match within("transfer to a stranger", nodes[0].0.transfer_leadership(9)).await {
        Err(Error::Transfer(raft_core::TransferError::UnknownNode(9))) => {}
        other => panic!("expected UnknownNode(9), got {other:?}"),
    }

    // Remove node 1; the other three go on committing.
    topology.voters.remove(&1);
    within("removing node 1", nodes[1].0.set_configuration(topology)).await.unwrap();
    let rest: Vec<&RaftHandle> = nodes.iter().skip(1).map(|(h, _)| h).collect();
    assert_eq!(propose(&rest, "after").await, Bytes::from("ok:after"));
    for (handle, _) in &nodes {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_compact_the_log_catch_up_a_lagging_node_and_survive_restarts() {
    let dirs = dirs(3);
    let membership = Membership::with_voters([(1, "n1"), (2, "n2"), (3, "n3")]);
    let network = ChannelNetwork::new();
    let options = |id: NodeId| {
        let mut config = Config::new(id);
        config.snapshot_entries_max = 20;
        config.log_tail_entries = 5;
        // Snapshots of this size (about 700 bytes) travel in several chunks.
        config.bytes_per_message_max = 128;
        Options::new(config, dirs[id as usize - 1].path()).initial_membership(membership.clone())
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let recorder = Recorder::default();
        let handle = RaftNode::start(options(id), recorder.clone(), network.clone()).await.unwrap();
        network.register(id, handle.clone());
        nodes.push((handle, recorder));
    }
    let handles: Vec<&RaftHandle> = nodes.iter().map(|(h, _)| h).collect();
    let leader = agreed_leader(&handles).await;
    let lagging = (leader + 1) % 3;
    propose(&handles, "first").await;
    let recorder = nodes[lagging].1.clone();
    until("the lagging node to apply the first command", || recorder.commands().len() == 1).await;

    // One follower stops; the others commit far past the snapshot interval.
    network.unregister(lagging as NodeId + 1);
    nodes[lagging].0.shutdown().await;
    let alive: Vec<&RaftHandle> =
        nodes.iter().enumerate().filter(|(i, _)| *i != lagging).map(|(_, (h, _))| h).collect();
    for i in 0..100 {
        propose(&alive, &format!("c{i}")).await;
    }
    compacted_past(&nodes[leader].0, 50).await;
    let expected = nodes[leader].1.commands();
    assert_eq!(expected.len(), 101);

    // It comes back behind the leader's compacted log: a snapshot brings it up.
    let id = lagging as NodeId + 1;
    let fresh = Recorder::default();
    let handle = RaftNode::start(options(id), fresh.clone(), network.clone()).await.unwrap();
    network.register(id, handle.clone());
    nodes[lagging] = (handle, fresh.clone());
    until("the lagging node to catch up", || fresh.commands().len() == 101).await;
    assert_eq!(fresh.commands(), expected);
    let status = nodes[lagging].0.status().await.unwrap();
    assert!(status.first_index > 2, "caught up without a snapshot: {status:?}");

    // The leader restarts from its own snapshot plus the log after it.
    let leader_id = leader as NodeId + 1;
    network.unregister(leader_id);
    nodes[leader].0.shutdown().await;
    let again = Recorder::default();
    let handle = RaftNode::start(options(leader_id), again.clone(), network.clone()).await.unwrap();
    network.register(leader_id, handle.clone());
    nodes[leader] = (handle, again.clone());
    until("the restarted node to re-apply", || again.commands().len() >= 101).await;
    assert_eq!(again.commands()[..101], expected[..]);
    let handles: Vec<&RaftHandle> = nodes.iter().map(|(h, _)| h).collect();
    assert_eq!(propose(&handles, "last").await, Bytes::from("ok:last"));
    for (handle, _) in &nodes {
        handle.shutdown().await;
    }
}

/// Nodes with their storage in memory (written by the node task itself)
/// and their state machine applied in a task replicate concurrent
/// proposals, compact their logs, and bring a new, empty node up to date
/// with a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_nodes_replicate_compact_and_catch_up_by_snapshot() {
    let membership = Membership::with_voters([(1, "n1"), (2, "n2"), (3, "n3")]);
    let network = ChannelNetwork::new();
    let options = |id: NodeId| {
        let mut config = Config::new(id);
        config.snapshot_entries_max = 20;
        config.log_tail_entries = 5;
        let mut options = Options::new(config, "unused").initial_membership(membership.clone());
        // Applying in a task rather than on a thread: snapshots taken,
        // installed and restored that way too.
        options.apply_in_task = true;
        options
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let recorder = Recorder::default();
        let handle = RaftNode::start_in_memory(options(id), recorder.clone(), network.clone()).await.unwrap();
        network.register(id, handle.clone());
        nodes.push((handle, recorder));
    }
    let handles: Vec<&RaftHandle> = nodes.iter().map(|(h, _)| h).collect();
    let leader = agreed_leader(&handles).await;
    let lagging = (leader + 1) % 3;
    network.unregister(lagging as NodeId + 1);
    nodes[lagging].0.shutdown().await;

    let mut tasks = Vec::new();
    for i in 0..100 {
        let leader = nodes[leader].0.clone();
        tasks.push(tokio::spawn(async move { leader.propose(format!("p{i}")).await }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(within("proposal", task).await.unwrap().unwrap(), Bytes::from(format!("ok:p{i}")));
    }
    // The core asks for a snapshot as entries apply (none while one is being
    // saved): a few more, one at a time, so it asks again after the burst.
    let alive: Vec<&RaftHandle> =
        nodes.iter().enumerate().filter(|(i, _)| *i != lagging).map(|(_, (h, _))| h).collect();
    for i in 0..30 {
        propose(&alive, &format!("s{i}")).await;
    }
    compacted_past(&nodes[leader].0, 50).await;
    let expected = nodes[leader].1.commands();
    assert_eq!(expected.len(), 130);

    // An empty node in the lagging one's place: only a snapshot can bring
    // it up, the log before it being gone.
    let id = lagging as NodeId + 1;
    let fresh = Recorder::default();
    let handle = RaftNode::start_in_memory(options(id), fresh.clone(), network.clone()).await.unwrap();
    network.register(id, handle.clone());
    nodes[lagging] = (handle, fresh.clone());
    until("the new node to catch up", || fresh.commands().len() == 130).await;
    assert_eq!(fresh.commands(), expected);
    let status = nodes[lagging].0.status().await.unwrap();
    assert!(status.first_index > 2, "caught up without a snapshot: {status:?}");
    for (handle, _) in &nodes {
        handle.shutdown().await;
    }
}

/// A proposal the leader cannot commit (its followers are gone) is
/// answered `Timeout` at its deadline by the node itself: the proposer arms
/// no timer of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_that_cannot_commit_times_out_at_its_deadline() {
    let membership = Membership::with_voters([(1, "n1"), (2, "n2"), (3, "n3")]);
    let network = ChannelNetwork::new();
    let mut handles = Vec::new();
    for id in 1..=3 {
        // Without CheckQuorum the cut-off leader stays leader.
        let config = Config { check_quorum: false, ..Config::new(id) };
        let options = Options::new(config, "unused")
            .initial_membership(membership.clone())
            .propose_timeout(Duration::from_millis(300));
        let handle = RaftNode::start_in_memory(options, Recorder::default(), network.clone()).await.unwrap();
        network.register(id, handle.clone());
        handles.push(handle);
    }
    let refs: Vec<&RaftHandle> = handles.iter().collect();
    let leader = agreed_leader(&refs).await;
    for (i, handle) in handles.iter().enumerate() {
        if i != leader {
            network.unregister(i as NodeId + 1);
            handle.shutdown().await;
        }
    }
    let started = std::time::Instant::now();
    let outcome = within("the proposal's answer", handles[leader].propose_local("stuck")).await;
    let elapsed = started.elapsed();
    assert!(matches!(outcome, Err(Error::Timeout)), "{outcome:?}");
    assert!(elapsed >= Duration::from_millis(300), "answered before its deadline: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "answered long after its deadline: {elapsed:?}");
    handles[leader].shutdown().await;
}

/// How many times `command` was applied to `recorder`.
fn applied_times(recorder: &Recorder, command: &str) -> usize {
    recorder.commands().iter().filter(|c| &c[..] == command.as_bytes()).count()
}

fn sessions(recorder: Recorder) -> Sessions<Recorder> {
    Sessions::new(recorder, SessionOptions::default()).unwrap()
}

// Paper section 8, dissertation 6.3: a write retried through another node
// applies once; a node caught up from a snapshot keeps the session table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_write_retried_through_another_node_applies_once_also_after_snapshot_catch_up() {
    let dirs = dirs(3);
    let (mut listeners, membership) = http_listeners(3).await;
    let options = |id: NodeId| {
        let mut config = Config::new(id);
        config.snapshot_entries_max = 20;
        config.log_tail_entries = 5;
        Options::new(config, dirs[id as usize - 1].path()).initial_membership(membership.clone())
    };
    // Node 3 stays down (its port held) while the others write past a
    // snapshot.
    let late_listener = listeners.pop().unwrap();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        nodes.push(HttpNode::start_with(options(i as NodeId + 1), listener, sessions).await);
    }
    let handles: Vec<&RaftHandle> = nodes.iter().map(|n| &n.handle).collect();
    let leader = agreed_leader(&handles).await;
    let follower = 1 - leader;
    drop(handles);
    let probe = within("register", Session::register(nodes[follower].handle.clone())).await.unwrap();
    let write = SessionCommand::Request {
        client: probe.client(),
        serial: 1,
        first_unacked: 1,
        command: Bytes::from("x-1"),
    }
    .encode();

    // The write through the follower (forwarded), then its retry through
    // the leader.
    let first = within("the write", nodes[follower].handle.propose(write.clone())).await.unwrap();
    let retry = within("the retry", nodes[leader].handle.propose(write.clone())).await.unwrap();

    let once = |duplicate| SessionResponse::Applied { response: Bytes::from("ok:x-1"), duplicate };
    assert_eq!(SessionResponse::decode(&first).unwrap(), once(false));
    assert_eq!(SessionResponse::decode(&retry).unwrap(), once(true));
    for node in &nodes {
        within("a read barrier", node.handle.read()).await.unwrap();
        assert_eq!(applied_times(&node.recorder, "x-1"), 1, "applied twice on node {}", node.id);
    }

    // Enough writes (through the Session helper) for the leader to
    // snapshot and compact its log past the probe's write.
    let mut writer = within("register", Session::register(nodes[leader].handle.clone())).await.unwrap();
    for i in 0..40 {
        let response = within("a session write", writer.propose(format!("w-{i}"))).await.unwrap();
        assert_eq!(response, Bytes::from(format!("ok:w-{i}")));
    }
    let leader_handle = nodes[leader].handle.clone();
    within("the leader to compact its log", async {
        while leader_handle.status().await.unwrap().first_index <= 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Node 3 comes up empty and catches up from a snapshot.
    nodes.push(HttpNode::start_with(options(3), late_listener, sessions).await);
    let late = nodes[2].recorder.clone();
    until("node 3 to catch up", || late.commands().len() == 41).await;
    assert!(nodes[2].handle.snapshot_index() > 0, "node 3 caught up without a snapshot");

    // Node 3 leads, so its own session table answers the retry.
    within("transfer to node 3", nodes[0].handle.transfer_leadership(3)).await.unwrap();
    let again = within("the retry on node 3", nodes[2].handle.propose(write.clone())).await.unwrap();
    assert_eq!(SessionResponse::decode(&again).unwrap(), once(true));
    assert_eq!(
        within("a later session write", writer.propose("w-last")).await.unwrap(),
        Bytes::from("ok:w-last")
    );
    for node in &nodes {
        within("a read barrier", node.handle.read()).await.unwrap();
        assert_eq!(applied_times(&node.recorder, "x-1"), 1, "applied twice on node {}", node.id);
        assert_eq!(applied_times(&node.recorder, "w-last"), 1);
    }
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_state_machine_cannot_restore_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(1);
    config.snapshot_entries_max = 5;
    let options =
        Options::new(config, dir.path()).initial_membership(Membership::with_voters([(1, "local")]));
    let handle = RaftNode::start(options.clone(), Recorder::default(), ChannelNetwork::new()).await.unwrap();
    within("election", handle.leader().wait_for(|s| s.is_leader)).await.unwrap();
    for i in 0..10 {
        handle.propose(format!("c{i}")).await.unwrap();
    }
    until("a snapshot", || handle.snapshot_index() > 0).await;
    handle.shutdown().await;

    // The same directory under a state machine that cannot read that
    // snapshot (a plain one, not a sessions snapshot).
    match RaftNode::start(options, sessions(Recorder::default()), ChannelNetwork::new()).await {
        Err(Error::Restore(e)) => assert!(e.to_string().contains("not a sessions snapshot"), "{e}"),
        other => panic!("expected Error::Restore, got {other:?}"),
    }
}

// Dissertation 3.10: a leader that shuts down hands leadership over first,
// so the cluster does not wait an election timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_shutdown_with_transfer_hands_over_in_the_next_term_and_loses_no_write() {
    let dirs = dirs(3);
    let (listeners, membership) = http_listeners(3).await;
    // Elections after 1-2 s: a leader sooner than that comes from the
    // transfer, not from an election timeout.
    let election_timeout_min = Duration::from_secs(1);
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut config = Config::new(i as NodeId + 1);
        config.election_ticks_min = 100;
        config.election_ticks_max = 200;
        let options = Options::new(config, dirs[i].path()).initial_membership(membership.clone());
        nodes.push(HttpNode::start_with(options, listener, |recorder| recorder).await);
    }
    let handles: Vec<&RaftHandle> = nodes.iter().map(|n| &n.handle).collect();
    let leader = agreed_leader(&handles).await;
    let old_term = handles[leader].leader().borrow().term;
    propose(&handles, "before").await;
    drop(handles);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // A client writes through a follower all along.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let client = nodes[survivors[0]].handle.clone();
    let writer = tokio::spawn({
        let acked = acked.clone();
        async move {
            let mut failures = Vec::new();
            for i in 0.. {
                if stop_rx.try_recv().is_ok() {
                    break;
                }
                let command = format!("bg-{i}");
                match client.propose(command.clone()).await {
                    Ok(response) => {
                        assert_eq!(response, Bytes::from(format!("ok:{command}")));
                        acked.lock().unwrap().push(command);
                    }
                    Err(e) => failures.push(format!("{command}: {e}")),
                }
            }
            failures
        }
    });
    let written = || acked.lock().unwrap().len();
    until("the client to write", || written() >= 5).await;

    let started = std::time::Instant::now();
    let transfer = ShutdownOptions::default().transfer_leadership(true);
    let handoff = within("the shutdown", nodes[leader].handle.shutdown_with(transfer.clone())).await;
    let elapsed = started.elapsed();

    let Handoff::Transferred { to, term } = handoff else { panic!("no handoff: {handoff:?}") };
    assert_ne!(to, nodes[leader].id);
    assert_eq!(term, old_term + 1);
    assert!(elapsed < election_timeout_min, "the handoff took {elapsed:?}");
    assert!(nodes[leader].handle.is_stopped());
    let rest: Vec<&RaftHandle> = survivors.iter().map(|&i| &nodes[i].handle).collect();
    assert_eq!(rest[agreed_leader(&rest).await].id(), to);
    for handle in &rest {
        assert_eq!(handle.leader().borrow().term, old_term + 1, "an election followed the handoff");
    }
    drop(rest);
    // The client goes on writing, and none of its writes failed.
    let before = written();
    until("the client to write after the handoff", || written() >= before + 5).await;
    stop_tx.send(()).unwrap();
    let failures = within("the client to stop", writer).await.unwrap();
    assert!(failures.is_empty(), "writes failed across the handoff: {failures:?}");
    let acked = acked.lock().unwrap().clone();
    for &i in &survivors {
        within("a read barrier", nodes[i].handle.read()).await.unwrap();
        let recorder = &nodes[i].recorder;
        assert_eq!(applied_times(recorder, "before"), 1);
        for command in &acked {
            assert_eq!(applied_times(recorder, command), 1, "{command} on node {}", nodes[i].id);
        }
    }
    nodes[leader].stop().await;

    // A follower has nothing to hand over.
    let new_leader = survivors.iter().copied().find(|&i| nodes[i].id == to).unwrap();
    let follower = survivors.iter().copied().find(|&i| i != new_leader).unwrap();
    let handoff =
        within("a follower's shutdown", nodes[follower].handle.shutdown_with(transfer.clone())).await;
    assert!(matches!(handoff, Handoff::NotLeader), "{handoff:?}");
    nodes[follower].stop().await;
    // The last node leads, but no other voter is up: the transfer fails
    // within its deadline and the node stops all the same.
    let bounded = transfer.transfer_timeout(Duration::from_millis(300));
    let handoff = within("the last shutdown", nodes[new_leader].handle.shutdown_with(bounded)).await;
    assert!(matches!(handoff, Handoff::Failed(_)), "{handoff:?}");
    assert!(nodes[new_leader].handle.is_stopped());
    nodes[new_leader].stop().await;
}

/// A peer whose connections fail is tried again after a backoff, not for
/// every message (a heartbeat per tick would open a connection per tick);
/// once it serves again, messages reach it within the backoff bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_peer_is_retried_with_backoff_and_reached_again() {
    use raft_http::{HttpPeer, Peer};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Down: every connection is accepted and closed at once.
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let down = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let options = http_options();
    let client = reqwest::Client::new();
    let peer = HttpPeer::spawn(2, &addr.to_string(), options.clone(), client);
    let heartbeat = || raft_core::Message {
        from: 1,
        to: 2,
        term: 1,
        body: raft_core::Body::AppendEntries { prev_index: 0, prev_term: 0, entries: Vec::new(), commit: 0 },
    };
    let sent = 200;
    for _ in 0..sent {
        peer.send(heartbeat());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let tried = attempts.load(Ordering::SeqCst);
    // 5, 10, 20, 40, 80, then 100 ms apart: about 8 in 400+ ms.
    assert!((2..=20).contains(&tried), "{tried} connection attempts for {sent} messages");

    // Up: a real receiver on the same address.
    down.abort();
    let _ = down.await;
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let router = axum::Router::new().route(
        "/raft/messages",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let back = std::time::Instant::now();
    within("a message to reach the peer again", async {
        while received.load(Ordering::SeqCst) == 0 {
            peer.send(heartbeat());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let took = back.elapsed();
    assert!(took < options.reconnect_backoff_max * 3, "reached again after {took:?}");
}
