//! Forming a cluster from a static member list (`--peers s1=HOST:PORT,…`, like etcd's
//! initial cluster): server IDs, the raft members, and which server initialises the set.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use windflow_raft::{BasicNode, ServerId};

/// One server of the initial member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Its QUIC address, as the other servers reach it.
    pub addr: SocketAddr,
}

/// Why a member list is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeersError {
    #[error("`--peers` entry `{0}` must be NAME=HOST:PORT")]
    Malformed(String),
    #[error("`--peers` entry `{entry}`: `{addr}` is not an IP:PORT address")]
    BadAddress { entry: String, addr: String },
    #[error("`--peers` names `{0}` twice")]
    Duplicate(String),
    #[error("`--peers` does not include this server (`{0}`)")]
    MissingSelf(String),
}

/// Parses `s1=10.0.0.1:7481,s2=10.0.0.2:7481`.
pub fn parse_peers(list: &str) -> Result<Vec<Peer>, PeersError> {
    let mut peers: Vec<Peer> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = entry
            .split_once('=')
            .ok_or_else(|| PeersError::Malformed(entry.into()))?;
        let (name, addr) = (name.trim(), addr.trim());
        if name.is_empty() {
            return Err(PeersError::Malformed(entry.into()));
        }
        let addr = addr.parse().map_err(|_| PeersError::BadAddress {
            entry: entry.into(),
            addr: addr.into(),
        })?;
        if peers.iter().any(|p| p.name == name) {
            return Err(PeersError::Duplicate(name.into()));
        }
        peers.push(Peer {
            name: name.into(),
            addr,
        });
    }
    Ok(peers)
}

/// A server's raft ID, derived from its name so every server computes the same one.
pub fn server_id(name: &str) -> ServerId {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    // Keep it positive and non-zero for tools that read it as a signed number.
    (u64::from_be_bytes(bytes) >> 1).max(1)
}

/// The initial raft membership and whether this server is the one that initialises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster {
    pub members: BTreeMap<ServerId, BasicNode>,
    /// Exactly one server of the set initialises it: the one whose name sorts first.
    pub initialiser: bool,
    /// This server's address as its peers dial it.
    pub advertise: SocketAddr,
}

/// The initial cluster of server `name`: itself alone when `peers` is empty.
pub fn initial_cluster(
    name: &str,
    bound: SocketAddr,
    peers: &[Peer],
) -> Result<InitialCluster, PeersError> {
    if peers.is_empty() {
        return Ok(InitialCluster {
            members: BTreeMap::from([(server_id(name), BasicNode::new(bound.to_string()))]),
            initialiser: true,
            advertise: bound,
        });
    }
    let me = peers
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PeersError::MissingSelf(name.into()))?;
    let first = peers.iter().map(|p| p.name.as_str()).min().unwrap_or(name);
    Ok(InitialCluster {
        members: peers
            .iter()
            .map(|p| (server_id(&p.name), BasicNode::new(p.addr.to_string())))
            .collect(),
        initialiser: first == name,
        advertise: me.addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_errors_name_the_entry() {
        let peers = parse_peers("s1=127.0.0.1:7481, s2=127.0.0.1:7482").unwrap();
        assert_eq!(
            peers[1],
            Peer {
                name: "s2".into(),
                addr: "127.0.0.1:7482".parse().unwrap()
            }
        );
        assert_eq!(parse_peers("s1"), Err(PeersError::Malformed("s1".into())));
        assert!(matches!(
            parse_peers("s1=host:1"),
            Err(PeersError::BadAddress { .. })
        ));
        assert_eq!(
            parse_peers("a=127.0.0.1:1,a=127.0.0.1:2"),
            Err(PeersError::Duplicate("a".into()))
        );
    }

    #[test]
    fn exactly_one_server_initialises_and_ids_agree() {
        let peers = parse_peers("s2=127.0.0.1:2,s1=127.0.0.1:1,s3=127.0.0.1:3").unwrap();
        let bound = "0.0.0.0:7481".parse().unwrap();
        let clusters: Vec<_> = ["s1", "s2", "s3"]
            .iter()
            .map(|n| initial_cluster(n, bound, &peers).unwrap())
            .collect();
        assert_eq!(clusters.iter().filter(|c| c.initialiser).count(), 1);
        assert!(clusters[0].initialiser);
        assert!(clusters.windows(2).all(|w| w[0].members == w[1].members));
        assert_eq!(clusters[1].advertise, "127.0.0.1:2".parse().unwrap());
        assert_eq!(clusters[0].members.len(), 3);
        assert_ne!(server_id("s1"), server_id("s2"));
        assert_eq!(
            initial_cluster("s9", bound, &peers),
            Err(PeersError::MissingSelf("s9".into()))
        );
        let alone = initial_cluster("dev", bound, &[]).unwrap();
        assert!(alone.initialiser && alone.members.len() == 1);
    }
}
