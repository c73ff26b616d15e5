//! The cluster seam without Redis: two hubs joined by an in-memory
//! [`Cluster`] that does what the Redis broker does — a shared member
//! list, joins and leaves to the other node, signals to the target's node,
//! disconnects to every node — so the hub's part is tested on its own.

use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use serde_json::json;

use super::cluster::{node_of, Listed};
use super::room_tests::{heard, run};
use super::tests::{as_user as user, conn, now};
use super::*;
use crate::error::ErrorKind;
use crate::log::{MemoryLog, MemoryLogConfig};

/// What the nodes share: the member lists and each node's inbound.
#[derive(Default)]
struct Shared {
    members: StdMutex<HashMap<ChannelName, BTreeMap<SubscriberId, Option<UserId>>>>,
    nodes: StdMutex<HashMap<u64, Arc<dyn Inbound>>>,
}

struct MemoryCluster {
    node: u64,
    shared: Arc<Shared>,
}

impl MemoryCluster {
    /// Every other node's inbound.
    fn others(&self) -> Vec<Arc<dyn Inbound>> {
        let nodes = self.shared.nodes.lock().unwrap();
        nodes
            .iter()
            .filter(|(n, _)| **n != self.node)
            .map(|(_, i)| i.clone())
            .collect()
    }
}

#[async_trait]
impl Cluster for MemoryCluster {
    fn node(&self) -> u64 {
        self.node
    }

    fn attach(&self, inbound: Arc<dyn Inbound>) {
        self.shared.nodes.lock().unwrap().insert(self.node, inbound);
    }

    fn client_keys(&self) -> Option<ClientKeys> {
        Some(ClientKeys::from_secret([7; 32]))
    }

    async fn joined(
        &self,
        channel: &ChannelName,
        id: SubscriberId,
        user: Option<&UserId>,
        announce: bool,
    ) -> Result<(), Error> {
        let mut members = self.shared.members.lock().unwrap();
        members
            .entry(channel.clone())
            .or_default()
            .insert(id, user.cloned());
        drop(members);
        if announce {
            self.others()
                .iter()
                .for_each(|i| i.presence(channel, true, id, user));
        }
        Ok(())
    }

    fn left(&self, channel: &ChannelName, id: SubscriberId, user: Option<&UserId>, announce: bool) {
        if let Some(m) = self.shared.members.lock().unwrap().get_mut(channel) {
            m.remove(&id);
        }
        if announce {
            self.others()
                .iter()
                .for_each(|i| i.presence(channel, false, id, user));
        }
    }

    async fn flush(&self) {}

    async fn members(&self, channel: &ChannelName, _announce: bool) -> Result<Vec<Member>, Error> {
        let members = self.shared.members.lock().unwrap();
        Ok(members
            .get(channel)
            .map(|m| m.iter().map(|(id, u)| (*id, u.clone())).collect())
            .unwrap_or_default())
    }

    async fn member(
        &self,
        channel: &ChannelName,
        id: SubscriberId,
    ) -> Result<Option<Option<UserId>>, Error> {
        let members = self.shared.members.lock().unwrap();
        Ok(members.get(channel).and_then(|m| m.get(&id).cloned()))
    }

    async fn relay(&self, signal: RelayedSignal) -> Result<(), Error> {
        let target = self
            .shared
            .nodes
            .lock()
            .unwrap()
            .get(&node_of(signal.to))
            .cloned();
        if let Some(inbound) = target {
            inbound.signal(signal);
        }
        Ok(())
    }

    async fn followed_elsewhere(&self, _channel: &ChannelName) -> Result<bool, Error> {
        Ok(false)
    }

    async fn disconnect(&self, user: &UserId, at: u64) -> Result<(), Error> {
        self.others().iter().for_each(|i| i.disconnect(user, at));
        Ok(())
    }

    async fn claim(&self, _job: &str, _ttl_ms: u64) -> Result<bool, Error> {
        Ok(true)
    }

    async fn renew(&self, _members: Vec<Listed>) {}
}

/// Two hubs, nodes 1 and 2, of one in-memory cluster.
fn two_nodes() -> (Arc<Hub>, Arc<Hub>) {
    let shared = Arc::new(Shared::default());
    let hub = |node| {
        let cluster = Arc::new(MemoryCluster {
            node,
            shared: shared.clone(),
        });
        let config = HubConfig {
            clock: Arc::new(crate::ManualClock::new(1_700_000_000_000)),
            cluster: Some(cluster),
            ..HubConfig::default()
        };
        let log = Arc::new(MemoryLog::new(MemoryLogConfig::default()));
        Arc::new(Hub::new(log, config))
    };
    (hub(1), hub(2))
}

#[test]
fn a_room_spans_two_hubs() {
    let (one, two) = two_nodes();
    assert_eq!(one.first_id() >> cluster::NODE_SHIFT, 1);
    let (a, b) = (one.first_id(), two.first_id());
    let mut ca = conn(&one, a, user("alice"));
    let mut cb = conn(&two, b, user("bob"));
    let join = r#"{"type":"subscribe","channel":"room:x"}"#;
    run(&mut ca, join);
    let rb = run(&mut cb, join);
    assert_eq!(
        rb["room"]["members"],
        json!([{"client": a.to_string(), "user": "alice"}]),
        "the member on the other node is in the list"
    );
    assert_eq!(
        heard(&mut ca),
        [json!({"type":"join","channel":"room:x","user":"bob","client":b.to_string()})]
    );
    // A signal to the other node's member goes through the cluster.
    let sent = run(
        &mut cb,
        &format!(r#"{{"type":"signal","room":"room:x","to":"{a}","data":{{"sdp":1}}}}"#),
    );
    assert_eq!(sent["type"], "signaled", "{sent}");
    assert_eq!(
        heard(&mut ca),
        [
            json!({"type":"signal","room":"room:x","from":b.to_string(),"user":"bob","data":{"sdp":1}})
        ]
    );
    // Presence on either node lists both.
    let p = now(one.presence(&ChannelName::new("room:x").unwrap())).unwrap();
    assert_eq!(p.members.unwrap().len(), 2);
    // A stranger of the other node is refused.
    let stranger = (2 << cluster::NODE_SHIFT) + 99;
    let e = now(one.signal(
        &ChannelName::new("room:x").unwrap(),
        a,
        stranger,
        &crate::json::SafeJson::parse(b"1").unwrap(),
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownClient);
    // Leaving tells the other node's members.
    drop(cb);
    assert_eq!(
        heard(&mut ca),
        [json!({"type":"leave","channel":"room:x","user":"bob","client":b.to_string()})]
    );
}

#[test]
fn a_disconnect_reaches_the_users_connections_on_every_node() {
    let (one, two) = two_nodes();
    let cb = conn(&two, two.first_id(), user("bob"));
    assert_eq!(
        now(one.disconnect(&UserId::from("bob"))),
        Ok(0),
        "none here"
    );
    assert!(cb.outbox().is_disconnected(), "told on the other node");
}
