//! Nodes enrolled by agents, the certificates issued to them, and the revocation list.
//!
//! Every node certificate's serial is recorded when it is issued (`nodecert/<node><serial>`),
//! so that revoking a node can put each of them on the list (`revoked/<serial>`) that the
//! servers' TLS verifiers consult at every handshake.

use windflow_protocol::enroll::JoinKind;
use windflow_protocol::{Node, NodeId, Timestamp};

use crate::StoreError;
use crate::command::{Applied, ApplyError, NodeCert, Response};
use crate::state::{Pending, key};

fn cert_key(node: NodeId, serial: &str) -> Vec<u8> {
    [
        key::id(key::NODE_CERT, node.0).as_slice(),
        serial.as_bytes(),
    ]
    .concat()
}

fn record_cert(
    p: &mut Pending<'_>,
    node: NodeId,
    serial: String,
    not_after: Timestamp,
    at: Timestamp,
) -> Result<(), StoreError> {
    let cert = NodeCert {
        node,
        serial,
        not_after,
        issued_at: at,
        revoked_at: None,
    };
    p.put_as(cert_key(node, &cert.serial), &cert)
}

/// `Command::EnrollNode`: spend the agent token, register the node, record its certificate.
pub(crate) fn enroll(
    p: &mut Pending<'_>,
    hash: Vec<u8>,
    hostname: String,
    serial: String,
    not_after: Timestamp,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let token =
        match crate::join_tokens::spend_record(p, JoinKind::Agent, &hash, hostname.clone(), at)? {
            Ok(token) => token,
            Err(refused) => return Ok(Err(refused)),
        };
    let node = Node {
        id: NodeId(p.next(key::NEXT_NODE)?),
        name: hostname,
        drivers: Vec::new(),
        registered_at: at,
        last_seen_at: None,
        agent_version: None,
        resources: Default::default(),
        attributes: Default::default(),
        labels: token.labels,
        revoked_at: None,
        status: Default::default(),
        eligibility: Default::default(),
        drain: None,
    };
    p.put_as(key::id(key::NODE, node.id.0), &node)?;
    record_cert(p, node.id, serial, not_after, at)?;
    Ok(Ok(Applied::Node(node)))
}

/// `Command::NodeCertIssued`: a renewal, for a node that exists and is not revoked.
pub(crate) fn issued(
    p: &mut Pending<'_>,
    node: NodeId,
    serial: String,
    not_after: Timestamp,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(n) = p.get_as::<Node>(&key::id(key::NODE, node.0), "node")? else {
        return Ok(Err(ApplyError::not_found("node", node)));
    };
    if n.revoked_at.is_some() {
        return Ok(Err(ApplyError::Refused(format!(
            "node {node} is revoked: it gets no new certificate"
        ))));
    }
    record_cert(p, node, serial, not_after, at)?;
    Ok(Ok(Applied::Node(n)))
}

/// `Command::RevokeNode`: every certificate of the node goes on the revocation list.
pub(crate) fn revoke(
    p: &mut Pending<'_>,
    node: NodeId,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let node_key = key::id(key::NODE, node.0);
    let Some(mut n) = p.get_as::<Node>(&node_key, "node")? else {
        return Ok(Err(ApplyError::not_found("node", node)));
    };
    let mut certs = Vec::new();
    for entry in p.tree().scan_prefix(key::id(key::NODE_CERT, node.0)) {
        let (k, v) = entry?;
        certs.push((
            k.to_vec(),
            crate::decode::<NodeCert>(&v, "node certificate")?,
        ));
    }
    for (k, mut cert) in certs {
        if cert.revoked_at.is_some() {
            continue;
        }
        cert.revoked_at = Some(at);
        p.put_as(key::named(key::REVOKED, cert.serial.as_bytes()), &cert)?;
        p.put_as(k, &cert)?;
        p.add(key::REVOKED_COUNT.to_vec(), 1)?;
    }
    n.revoked_at.get_or_insert(at);
    p.put_as(node_key, &n)?;
    Ok(Ok(Applied::Node(n)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::apply_tests::{apply, store};
    use crate::command::{Command, JoinTokenRefusal};
    use crate::reader::StateReader;

    fn token(reader: &StateReader, kind: JoinKind, hash: &[u8], uses: Option<u32>) {
        let labels = BTreeMap::from([("rack".to_owned(), "r1".to_owned())]);
        apply(
            reader,
            Command::CreateJoinToken {
                kind,
                hash: hash.to_vec(),
                expires_at: Some(Timestamp(1000)),
                uses,
                labels,
                at: Timestamp(1),
            },
        )
        .unwrap();
    }

    fn enroll(reader: &StateReader, hash: &[u8], serial: &str, at: u64) -> Response {
        apply(
            reader,
            Command::EnrollNode {
                hash: hash.to_vec(),
                hostname: format!("host-{serial}"),
                serial: serial.into(),
                not_after: Timestamp(5000),
                at: Timestamp(at),
            },
        )
    }

    fn node_of(r: Response) -> Node {
        match r {
            Ok(Applied::Node(n)) => n,
            other => panic!("expected a node, got {other:?}"),
        }
    }

    #[test]
    fn an_agent_token_enrolls_labelled_nodes_until_used_up() {
        let (_d, reader) = store();
        token(&reader, JoinKind::Agent, b"a", Some(2));
        let first = node_of(enroll(&reader, b"a", "0a", 10));
        let second = node_of(enroll(&reader, b"a", "0b", 11));
        assert_eq!((first.id, second.id), (NodeId(1), NodeId(2)));
        assert_eq!(first.labels.get("rack").map(String::as_str), Some("r1"));
        assert_eq!(first.name, "host-0a");
        match enroll(&reader, b"a", "0c", 12) {
            Err(ApplyError::JoinTokenRefused(JoinTokenRefusal::UsedUp { uses: 2, .. })) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            reader.nodes().unwrap().len(),
            2,
            "a refusal registers nothing"
        );
        match enroll(&reader, b"a", "0d", 2000) {
            Err(ApplyError::JoinTokenRefused(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_server_token_does_not_enroll_an_agent() {
        let (_d, reader) = store();
        token(&reader, JoinKind::Server, b"s", Some(5));
        match enroll(&reader, b"s", "0a", 10) {
            Err(ApplyError::JoinTokenRefused(JoinTokenRefusal::WrongKind { .. })) => {}
            other => panic!("{other:?}"),
        }
        assert!(reader.nodes().unwrap().is_empty());
    }

    #[test]
    fn revoking_a_node_lists_every_serial_it_holds_and_stops_renewals() {
        let (_d, reader) = store();
        token(&reader, JoinKind::Agent, b"a", None);
        let a = node_of(enroll(&reader, b"a", "0a", 10)).id;
        let b = node_of(enroll(&reader, b"a", "0b", 11)).id;
        let renewal = Command::NodeCertIssued {
            node: a,
            serial: "1a".into(),
            not_after: Timestamp(9000),
            at: Timestamp(20),
        };
        assert!(apply(&reader, renewal.clone()).is_ok());
        assert_eq!(reader.revoked_count().unwrap(), 0);
        let revoked = node_of(apply(
            &reader,
            Command::RevokeNode {
                node: a,
                at: Timestamp(30),
            },
        ));
        assert_eq!(revoked.revoked_at, Some(Timestamp(30)));
        let mut serials: Vec<String> = reader
            .revoked_certs()
            .unwrap()
            .into_iter()
            .map(|c| c.serial)
            .collect();
        serials.sort();
        assert_eq!(serials, ["0a", "1a"]);
        assert_eq!(reader.revoked_count().unwrap(), 2);
        // Again changes nothing; the other node is untouched; a revoked node is not renewed.
        let again = Command::RevokeNode {
            node: a,
            at: Timestamp(40),
        };
        assert_eq!(
            node_of(apply(&reader, again)).revoked_at,
            Some(Timestamp(30))
        );
        assert_eq!(reader.revoked_count().unwrap(), 2);
        assert!(reader.node(b).unwrap().unwrap().revoked_at.is_none());
        assert!(matches!(
            apply(&reader, renewal),
            Err(ApplyError::Refused(_))
        ));
        assert!(matches!(
            apply(
                &reader,
                Command::RevokeNode {
                    node: NodeId(99),
                    at: Timestamp(50)
                }
            ),
            Err(ApplyError::NotFound { .. })
        ));
    }
}
