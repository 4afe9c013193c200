//! A three-server raft group in one process, over real QUIC with mutual TLS on loopback:
//! election, replication to followers, a leader's loss, a lagging server brought back by a
//! snapshot, an agent certificate refused as a raft peer, and "any server answers": writes
//! and linearizable reads on followers, the member list, and membership changes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use windflow_certs::{ClusterCa, TlsIdentity};
use windflow_protocol::messages::ALPN_RAFT;
use windflow_protocol::{JobId, NodeId, Timestamp};
mod common;

use common::{SNAPSHOT_AFTER, Server, WAIT, applied, leader_among, three_servers};

use windflow_raft::{
    Applied, ApplyError, BasicNode, Command, MemberInfo, MemberRole, RaftNode, ServerId, WriteError,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_elect_replicate_and_survive_the_loss_of_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let refs: Vec<&Server> = servers.iter().collect();
    let leader = leader_among(&refs).await;
    let (lead, followers): (Vec<&Server>, Vec<&Server>) = refs.iter().partition(|s| s.id == leader);
    let lead = lead[0];

    for i in 1..=10u64 {
        assert_eq!(
            common::write_job(lead.node(), &format!("job-{i}")).await,
            JobId(i)
        );
    }
    let index = lead.node().reader().last_applied_index().unwrap();

    // Followers apply what the leader committed, and read it locally.
    for f in &followers {
        applied(f.node(), index).await;
        assert_eq!(f.node().reader().job_count().unwrap(), 10);
        assert_eq!(
            f.node()
                .reader()
                .job_by_name(&Default::default(), "job-7")
                .unwrap()
                .unwrap()
                .id,
            JobId(7)
        );
        assert!(!f.node().is_leader());
    }
    followers[0].node().linearizable().await.unwrap();
    lead.node().linearizable().await.unwrap();

    // The leader goes away: the other two elect a new one and keep every write.
    let lost = servers.iter().position(|s| s.id == leader).unwrap();
    servers[lost].stop().await;
    let rest: Vec<&Server> = servers.iter().filter(|s| s.id != leader).collect();
    let new_leader = tokio::time::timeout(WAIT, async {
        loop {
            let l = leader_among(&rest).await;
            if l != leader {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a new leader");
    let new_lead = rest.iter().find(|s| s.id == new_leader).unwrap();
    assert_eq!(
        common::write_job(new_lead.node(), "after-failover").await,
        JobId(11)
    );
    assert_eq!(new_lead.node().reader().job_count().unwrap(), 11);

    for s in &mut servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_missed_compacted_entries_catches_up_from_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let leader = {
        let refs: Vec<&Server> = servers.iter().collect();
        leader_among(&refs).await
    };
    let lag = servers.iter().position(|s| s.id != leader).unwrap();
    servers[lag].stop().await;

    let lead = servers.iter().find(|s| s.id == leader).unwrap();
    for i in 0..(SNAPSHOT_AFTER * 5) {
        common::write_job(lead.node(), &format!("j{i}")).await;
    }
    // The leader compacts its log past what the stopped server has.
    lead.node()
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > SNAPSHOT_AFTER * 2),
            "the leader purged its log",
        )
        .await
        .unwrap();
    let index = lead.node().reader().last_applied_index().unwrap();

    servers[lag].start().await;
    let back = servers[lag].node();
    applied(back, index).await;
    let snapshot = back
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "a snapshot installed")
        .await
        .unwrap();
    assert!(snapshot.snapshot.unwrap().index > SNAPSHOT_AFTER);
    assert_eq!(back.reader().job_count().unwrap(), SNAPSHOT_AFTER * 5);
    assert_eq!(
        back.reader()
            .job_by_name(&Default::default(), "j0")
            .unwrap()
            .unwrap()
            .id,
        JobId(1)
    );
    assert_eq!(
        back.reader().last_applied_index(),
        Some(index),
        "the snapshot's last-applied index is kept"
    );

    for s in &mut servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_certificate_is_refused_as_a_raft_peer() {
    let root = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&root.path().join("ca")).unwrap();
    let mut server = Server::bind(1, root.path(), &ca);
    server.start().await;
    let members = BTreeMap::from([(1, BasicNode::new(server.addr.to_string()))]);
    server.node().initialize_if_new(members).await.unwrap();

    let agent = TlsIdentity {
        ca_pem: ca.cert_pem().into(),
        cert: ca.issue_node(NodeId(7)).unwrap(),
    };
    let client = windflow_certs::quinn_client_config(&agent, ALPN_RAFT).unwrap();
    let endpoint =
        quinn::Endpoint::client(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
    let conn = endpoint
        .connect_with(client, server.addr, windflow_certs::SERVER_NAME)
        .unwrap()
        .await
        .expect("the TLS handshake itself succeeds: the CA is the same");
    let reason = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the server closes the connection");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(2));
        }
        other => panic!("unexpected close: {other:?}"),
    }
    server.stop().await;
}

/// Waits until `check` holds for `node`'s member list; shows the list if it never does.
async fn members_until(node: &RaftNode, what: &str, check: impl Fn(&[MemberInfo]) -> bool) {
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            if check(&node.members()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if reached.is_err() {
        panic!(
            "{what}: not within {WAIT:?}; members: {:#?}",
            node.members()
        );
    }
}

fn ids(members: &[MemberInfo], role: MemberRole) -> Vec<ServerId> {
    members
        .iter()
        .filter(|m| m.role == role)
        .map(|m| m.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_sent_to_a_follower_is_forwarded_to_the_leader_and_applied_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let refs: Vec<&Server> = servers.iter().collect();
    let leader = leader_among(&refs).await;
    let follower = refs.iter().find(|s| s.id != leader).unwrap();

    let job = common::write_job(follower.node(), "via-follower").await;
    assert_eq!(job, JobId(1));
    // apply's refusal comes back over the link as the same typed error.
    match follower
        .node()
        .write(Command::DeleteJob {
            job: JobId(99),
            at: Timestamp(2_000),
        })
        .await
    {
        Err(WriteError::Rejected(ApplyError::NotFound { kind, id })) => {
            assert_eq!((kind.as_str(), id.as_str()), ("job", "J99"));
        }
        other => panic!("expected the leader's NotFound, got {other:?}"),
    }
    // Every follower forwards, and the IDs apply gives come back in order.
    for (i, s) in refs.iter().filter(|s| s.id != leader).enumerate() {
        match s.node().write(common::create_job(&format!("f{i}"))).await {
            Ok(Applied::Job(j)) => assert_eq!(j.id, JobId(2 + i as u64)),
            other => panic!("{other:?}"),
        }
    }

    let lead = refs.iter().find(|s| s.id == leader).unwrap();
    let index = lead.node().reader().last_applied_index().unwrap();
    for s in &refs {
        applied(s.node(), index).await;
        assert_eq!(s.node().reader().job_count().unwrap(), 3, "server {}", s.id);
        assert_eq!(
            s.node()
                .reader()
                .job_by_name(&Default::default(), "via-follower")
                .unwrap()
                .unwrap()
                .id,
            JobId(1)
        );
    }
    for s in &mut servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_linearizable_read_on_a_follower_sees_a_write_just_made_through_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let refs: Vec<&Server> = servers.iter().collect();
    let leader = leader_among(&refs).await;
    let lead = refs.iter().find(|s| s.id == leader).unwrap();
    let followers: Vec<&&Server> = refs.iter().filter(|s| s.id != leader).collect();

    // Read right after each write, with no wait between: only the read index makes the
    // follower's local state current.
    for i in 1..=20u64 {
        let name = format!("lin-{i}");
        assert_eq!(common::write_job(lead.node(), &name).await, JobId(i));
        let f = followers[(i % 2) as usize].node();
        f.linearizable().await.unwrap();
        let job = f.reader().job_by_name(&Default::default(), &name).unwrap();
        assert_eq!(
            job.map(|j| j.id),
            Some(JobId(i)),
            "read {i} missed its write"
        );
        assert!(
            f.reader().last_applied_index().unwrap()
                >= lead.node().reader().last_applied_index().unwrap()
        );
    }
    for s in &mut servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_lists_three_voters_one_leader_and_how_far_each_has_replicated() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let refs: Vec<&Server> = servers.iter().collect();
    let leader = leader_among(&refs).await;
    let lead = refs.iter().find(|s| s.id == leader).unwrap();
    common::write_job(lead.node(), "j").await;
    let index = lead.node().reader().last_applied_index().unwrap();

    members_until(lead.node(), "every member matched the last write", |m| {
        m.iter().all(|m| m.matched_index >= Some(index))
    })
    .await;
    let members = lead.node().members();
    assert_eq!(ids(&members, MemberRole::Voter), vec![1, 2, 3]);
    assert!(ids(&members, MemberRole::Learner).is_empty());
    let leaders: Vec<ServerId> = members
        .iter()
        .filter(|m| m.is_leader)
        .map(|m| m.id)
        .collect();
    assert_eq!(leaders, vec![leader]);
    for (m, s) in members.iter().zip(&refs) {
        assert_eq!((m.id, m.addr.clone()), (s.id, s.addr.to_string()));
    }

    // A follower knows the same members and leader, but not the replication progress.
    let follower = refs.iter().find(|s| s.id != leader).unwrap();
    let theirs = follower.node().members();
    assert_eq!(ids(&theirs, MemberRole::Voter), vec![1, 2, 3]);
    assert!(theirs.iter().all(|m| m.matched_index.is_none()));
    assert_eq!(
        theirs
            .iter()
            .filter(|m| m.is_leader)
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        vec![leader]
    );
    for s in &mut servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_server_joins_as_learner_then_voter_and_a_removed_server_leaves() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let leader = {
        let refs: Vec<&Server> = servers.iter().collect();
        leader_among(&refs).await
    };
    let lead = servers.iter().position(|s| s.id == leader).unwrap();
    for i in 1..=5 {
        common::write_job(servers[lead].node(), &format!("before-{i}")).await;
    }

    let ca = ClusterCa::load_or_create(&root.path().join("ca")).unwrap();
    let mut fourth = Server::bind(4, root.path(), &ca);
    fourth.start().await;
    let follower = servers.iter().position(|s| s.id != leader).unwrap();

    // Asked of a follower: forwarded to the leader; returns once 4 has caught up.
    servers[follower]
        .node()
        .add_learner(4, fourth.addr.to_string())
        .await
        .unwrap();
    let members = servers[lead].node().members();
    assert_eq!(ids(&members, MemberRole::Voter), vec![1, 2, 3]);
    assert_eq!(ids(&members, MemberRole::Learner), vec![4]);
    let index = servers[lead].node().reader().last_applied_index().unwrap();
    applied(fourth.node(), index).await;
    assert_eq!(fourth.node().reader().job_count().unwrap(), 5);

    servers[lead]
        .node()
        .change_voters([1, 2, 3, 4].into())
        .await
        .unwrap();
    let members = servers[lead].node().members();
    assert_eq!(ids(&members, MemberRole::Voter), vec![1, 2, 3, 4]);
    assert!(ids(&members, MemberRole::Learner).is_empty());

    // Remove a follower that is not the new server, asked of the new server.
    let gone = servers.iter().position(|s| s.id != leader).unwrap();
    let gone_id = servers[gone].id;
    fourth.node().remove_server(gone_id).await.unwrap();
    let members = servers[lead].node().members();
    let mut expected: Vec<ServerId> = vec![1, 2, 3, 4];
    expected.retain(|id| *id != gone_id);
    assert_eq!(ids(&members, MemberRole::Voter), expected);
    assert!(members.iter().all(|m| m.id != gone_id));
    servers[gone].stop().await;

    // The three left take writes, from any of them.
    let mut remaining: Vec<&Server> = servers.iter().filter(|s| s.id != gone_id).collect();
    remaining.push(&fourth);
    for (i, s) in remaining.iter().enumerate() {
        match s
            .node()
            .write(common::create_job(&format!("after-{i}")))
            .await
        {
            Ok(Applied::Job(j)) => assert_eq!(j.id, JobId(6 + i as u64)),
            other => panic!("write through server {}: {other:?}", s.id),
        }
    }
    let index = servers[lead].node().reader().last_applied_index().unwrap();
    for s in &remaining {
        applied(s.node(), index).await;
        assert_eq!(s.node().reader().job_count().unwrap(), 8, "server {}", s.id);
    }

    fourth.stop().await;
    for s in &mut servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_leader_a_write_fails_soon_with_not_leader_and_no_name() {
    let root = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&root.path().join("ca")).unwrap();
    let mut servers: Vec<Server> = (1..=3)
        .map(|id| Server::bind(id, root.path(), &ca))
        .collect();
    let members: BTreeMap<ServerId, BasicNode> = servers
        .iter()
        .map(|s| (s.id, BasicNode::new(s.addr.to_string())))
        .collect();
    // One server of three: it can never win an election.
    servers[0].start().await;
    servers[0].node().initialize_if_new(members).await.unwrap();

    let started = std::time::Instant::now();
    let result = tokio::time::timeout(WAIT, servers[0].node().write(common::create_job("x")))
        .await
        .expect("the write gives up on its own");
    match result {
        Err(e @ WriteError::NotLeader { leader: None }) => {
            assert!(e.to_string().contains("no raft leader"), "{e}");
        }
        other => panic!("expected NotLeader without a leader, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        servers[0].node().linearizable().await,
        Err(WriteError::NotLeader { leader: None })
    ));
    servers[0].stop().await;
}
