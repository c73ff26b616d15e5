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

/// What the nodes share: the member lists, each node's inbound, and the
/// survey's wire (each node's surveys and responder, and which nodes are
/// silent, as a node that died without unlisting itself is).
#[derive(Default)]
struct Shared {
    members: StdMutex<HashMap<ChannelName, BTreeMap<SubscriberId, Option<UserId>>>>,
    nodes: StdMutex<HashMap<u64, Arc<dyn Inbound>>>,
    responders: StdMutex<BTreeMap<u64, Arc<dyn Responder>>>,
    silent: StdMutex<Vec<u64>>,
}

struct MemoryCluster {
    node: u64,
    shared: Arc<Shared>,
    surveys: cluster::Surveys,
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

    fn answer_with(&self, responder: Arc<dyn Responder>) {
        let mut responders = self.shared.responders.lock().unwrap();
        responders.insert(self.node, responder);
    }

    /// The notices travel as text, as over Redis: the question to every
    /// other node, each answer back through [`cluster::deliver`].
    async fn survey(&self, question: &Question) -> Result<Survey, Error> {
        let responders = self.shared.responders.lock().unwrap().clone();
        let others = responders.keys().copied().filter(|n| *n != self.node);
        let id = self.surveys.start(others);
        let ask = cluster::encode_ask(id, self.node, question);
        let silent = self.shared.silent.lock().unwrap().clone();
        for (node, responder) in &responders {
            if *node == self.node || silent.contains(node) {
                continue;
            }
            let inbound = self.shared.nodes.lock().unwrap()[node].clone();
            let Ok(cluster::Delivered::Asked { id, question, .. }) =
                cluster::deliver(&*inbound, None, ask.as_bytes())
            else {
                panic!("an ask is left to the cluster");
            };
            let back = cluster::encode_answer(id, *node, responder.answer(&question));
            if let Ok(cluster::Delivered::Answered { id, node, answer }) =
                cluster::deliver(&*inbound, None, back.as_bytes())
            {
                self.surveys.answered(id, node, answer);
            }
        }
        let own = responders
            .get(&self.node)
            .map_or(serde_json::Value::Null, |r| r.answer(question));
        Ok(self.surveys.finish(id, (self.node, own)))
    }
}

/// Two hubs, nodes 1 and 2, of one in-memory cluster.
fn two_nodes() -> (Arc<Hub>, Arc<Hub>) {
    let (one, two, _) = nodes();
    (one, two)
}

/// Two hubs, nodes 1 and 2, and what they share.
fn nodes() -> (Arc<Hub>, Arc<Hub>, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    let hub = |node| {
        let cluster = Arc::new(MemoryCluster {
            node,
            shared: shared.clone(),
            surveys: Default::default(),
        });
        let config = HubConfig {
            clock: Arc::new(crate::ManualClock::new(1_700_000_000_000)),
            cluster: Some(cluster),
            ..HubConfig::default()
        };
        let log = Arc::new(MemoryLog::new(MemoryLogConfig::default()));
        Arc::new(Hub::new(log, config))
    };
    (hub(1), hub(2), shared)
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

/// Answers a survey as the server does: channels from the hub's table,
/// a user's connections from the hub's user table.
struct HubResponder(std::sync::Weak<Hub>);

impl Responder for HubResponder {
    fn answer(&self, question: &Question) -> serde_json::Value {
        let Some(hub) = self.0.upgrade() else {
            return serde_json::Value::Null;
        };
        match question {
            Question::Channels(q) => hub.channels(q).to_json(),
            Question::Info => json!({"node": hub.node()}),
            Question::Connections { user } => {
                json!(hub.user_connections(&UserId::from(user.as_str())))
            }
        }
    }
}

#[test]
fn a_survey_gathers_every_nodes_answer_and_names_the_silent() {
    let (one, two, shared) = nodes();
    for hub in [&one, &two] {
        hub.answer_with(Arc::new(HubResponder(Arc::downgrade(hub))));
    }
    let (a, b) = (one.first_id(), two.first_id());
    let mut on_one = conn(&one, a, user("alice"));
    let mut on_two = conn(&two, b, user("alice"));
    let mut bob = conn(&two, b + 1, user("bob"));
    run(&mut on_one, r#"{"type":"subscribe","channel":"chat:a"}"#);
    run(&mut on_two, r#"{"type":"subscribe","channel":"chat:a"}"#);
    run(&mut bob, r#"{"type":"subscribe","channel":"news"}"#);

    // Channels: each node's page, summed.
    let q = ChannelQuery::new(None, None, 10, Order::Name).unwrap();
    let survey = now(one.survey(&Question::Channels(q.clone()))).unwrap();
    assert_eq!(survey.missing, Vec::<u64>::new());
    let pages = survey
        .answers
        .iter()
        .map(|(_, a)| ChannelPage::from_json(a).unwrap());
    let page = listing::merge(&q, pages);
    let listed: Vec<(&str, u64)> = page
        .channels
        .iter()
        .map(|(c, n)| (c.as_str(), *n))
        .collect();
    assert_eq!(listed, [("chat:a", 2), ("news", 1)]);

    // A user's connections on every node, by node.
    let survey = now(two.survey(&Question::Connections {
        user: "alice".into(),
    }))
    .unwrap();
    assert_eq!(survey.answers, [(1, json!([a])), (2, json!([b]))]);
    drop(on_two);
    let survey = now(one.survey(&Question::Connections {
        user: "alice".into(),
    }))
    .unwrap();
    assert_eq!(survey.answers, [(1, json!([a])), (2, json!([]))]);

    // A silent node is named missing; the survey still answers.
    shared.silent.lock().unwrap().push(2);
    let survey = now(one.survey(&Question::Info)).unwrap();
    assert_eq!(survey.answers, [(1, json!({"node": 1}))]);
    assert_eq!(survey.missing, [2]);
}

#[test]
fn a_single_hub_answers_its_own_survey() {
    let hub = Arc::new(Hub::new(
        Arc::new(MemoryLog::new(MemoryLogConfig::default())),
        HubConfig::default(),
    ));
    let survey = now(hub.survey(&Question::Info)).unwrap();
    assert_eq!(
        survey.answers,
        [(0, serde_json::Value::Null)],
        "no responder"
    );
    hub.answer_with(Arc::new(HubResponder(Arc::downgrade(&hub))));
    let survey = now(hub.survey(&Question::Info)).unwrap();
    assert_eq!(survey.answers, [(0, json!({"node": 0}))]);
}
