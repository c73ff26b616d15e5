//! The Redis broker as the hub's [`Cluster`]: presence listed in Redis
//! with an expiry each node renews (so a crashed node's members drop out
//! within `presence_ttl`), joins and leaves announced on the channel's
//! own pub/sub channel (only nodes with subscribers hear them), signals
//! sent to the pub/sub channel of the target's node, disconnects to every
//! node's. Surveys ask on every node's pub/sub channel and are answered
//! on the asking node's; the live nodes are listed in Redis with an expiry
//! each renews, as presence is.
//!
//! Per channel, beside the log's keys: `{P:C}:p`, a sorted set of member
//! ids scored by when their listing ends, and `{P:C}:u`, a hash of each
//! member's user (`u` + user id, or `-` for anonymous). Per cluster:
//! `{P}:node:N`, node N's pub/sub channel; `{P}:all`, every node's;
//! `{P}:secret`, the key of connections' `client_key`s; `{P}:nodes`, a
//! sorted set of the live nodes scored by when their listing ends.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_trait::async_trait;
use pushgate_core::auth::UserId;
use pushgate_core::hub::cluster::{
    self, node_of, Cluster, Inbound, Listed, Question, RelayedSignal, Responder, Survey,
    SURVEY_TIMEOUT,
};
use pushgate_core::hub::{Member, SubscriberId};
use pushgate_core::rtc::ClientKeys;
use pushgate_core::{ChannelName, Error};

use super::{unavailable, Inner, RedisLog};

impl Inner {
    fn presence_keys(&self, channel: &ChannelName) -> (String, String) {
        let topic = self.topic(channel);
        (format!("{topic}:p"), format!("{topic}:u"))
    }

    /// Node `node`'s own pub/sub channel.
    pub(super) fn node_topic(&self, node: u64) -> String {
        format!("{{{}}}:node:{node}", self.prefix)
    }

    /// Every node's pub/sub channel.
    pub(super) fn all_topic(&self) -> String {
        format!("{{{}}}:all", self.prefix)
    }

    pub(super) fn secret_key(&self) -> String {
        format!("{{{}}}:secret", self.prefix)
    }

    /// Lists this node as live for another `presence_ttl` (`list`), or
    /// unlists it (a clean stop); the live nodes.
    pub(super) async fn live_nodes(&self, list: bool) -> Result<Vec<u64>, Error> {
        let me = self.node.to_string();
        let mut invocation = self.nodes.key(format!("{{{}}}:nodes", self.prefix));
        invocation
            .arg(if list { me.as_str() } else { "" })
            .arg(self.presence_ttl.as_millis() as u64)
            .arg(if list { "" } else { me.as_str() });
        let nodes: Vec<u64> = self.call("nodes", invocation).await?;
        Ok(nodes)
    }

    /// Answers node `from`'s survey `id` (spawned: the follower never waits).
    pub(super) fn answer(self: &Arc<Self>, id: u64, from: u64, question: Question) {
        if from == self.node {
            return; // its own, back from `{P}:all`: answered in `survey`
        }
        let Some(responder) = self.responder.get().cloned() else {
            return;
        };
        let inner = self.clone();
        tokio::spawn(async move {
            let answer = responder.answer(&question);
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(inner.node_topic(from))
                .arg(cluster::encode_answer(id, inner.node, answer));
            let _ = inner.command::<()>("survey", &cmd).await;
        });
    }

    /// Lists `members` of `channel` for another `presence_ttl`;
    /// `announce`: the channel announces joins and leaves (the script
    /// announces those it lists first, and the leaves of those whose
    /// listing ended).
    async fn list(
        &self,
        channel: &ChannelName,
        members: &[Member],
        announce: bool,
    ) -> Result<(), Error> {
        let (set, users) = self.presence_keys(channel);
        let mut invocation = self.presence_add.key(&set);
        invocation
            .key(&users)
            .key(self.topic(channel))
            .arg(self.presence_ttl.as_millis() as u64)
            .arg(self.publish_command())
            .arg(flag(announce));
        for (id, user) in members {
            invocation.arg(*id).arg(encode_user(user.as_ref()));
        }
        self.call::<()>("presence", invocation).await
    }
}

/// A boolean as a script argument.
fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

fn encode_user(user: Option<&UserId>) -> String {
    user.map_or_else(|| "-".to_owned(), |u| format!("u{u}"))
}

fn decode_user(bytes: &[u8]) -> Option<Option<UserId>> {
    match bytes {
        b"-" => Some(None),
        [b'u', user @ ..] => Some(Some(UserId::from(std::str::from_utf8(user).ok()?))),
        _ => None,
    }
}

#[async_trait]
impl Cluster for RedisLog {
    fn node(&self) -> u64 {
        self.inner.node
    }

    fn attach(&self, inbound: Arc<dyn Inbound>) {
        let _ = self.inner.inbound.set(inbound);
    }

    fn client_keys(&self) -> Option<ClientKeys> {
        self.inner.client_keys.get().cloned()
    }

    async fn joined(
        &self,
        channel: &ChannelName,
        id: SubscriberId,
        user: Option<&UserId>,
        announce: bool,
    ) -> Result<(), Error> {
        let member = [(id, user.cloned())];
        self.inner.list(channel, &member, announce).await
    }

    fn left(
        &self,
        channel: &ChannelName,
        id: SubscriberId,
        _user: Option<&UserId>,
        announce: bool,
    ) {
        let inner = self.inner.clone();
        let channel = channel.clone();
        // Queued: this runs under the hub's lock. Should Redis fail it, or
        // the runtime be gone (a connection dropped at exit), the member
        // drops out when its listing ends, unrenewed.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        inner.leaving.fetch_add(1, Relaxed);
        runtime.spawn(async move {
            let (set, users) = inner.presence_keys(&channel);
            let mut invocation = inner.presence_remove.key(&set);
            invocation
                .key(&users)
                .key(inner.topic(&channel))
                .arg(id)
                .arg(inner.publish_command())
                .arg(flag(announce));
            let _ = inner.call::<()>("presence", invocation).await;
            if inner.leaving.fetch_sub(1, Relaxed) == 1 {
                inner.left.notify_waiters();
            }
        });
    }

    async fn flush(&self) {
        loop {
            let left = self.inner.left.notified();
            if self.inner.leaving.load(Relaxed) == 0 {
                break;
            }
            left.await;
        }
        // Stopping: surveys stop waiting for this node at once.
        let _ = self.inner.live_nodes(false).await;
    }

    async fn members(&self, channel: &ChannelName, announce: bool) -> Result<Vec<Member>, Error> {
        let (set, users) = self.inner.presence_keys(channel);
        let mut invocation = self.inner.presence_read.key(&set);
        invocation
            .key(&users)
            .key(self.inner.topic(channel))
            .arg(self.inner.publish_command())
            .arg(flag(announce));
        let flat: Vec<Vec<u8>> = self.inner.call("presence", invocation).await?;
        flat.chunks_exact(2)
            .map(|pair| {
                let id = super::number(&pair[0]);
                id.zip(decode_user(&pair[1])).ok_or_else(|| {
                    unavailable("presence", "Redis holds a member that is not pushgate's")
                })
            })
            .collect()
    }

    async fn member(
        &self,
        channel: &ChannelName,
        id: SubscriberId,
    ) -> Result<Option<Option<UserId>>, Error> {
        let (set, users) = self.inner.presence_keys(channel);
        let mut invocation = self.inner.presence_member.key(&set);
        invocation.key(&users).arg(id);
        let user: Option<Vec<u8>> = self.inner.call("presence", invocation).await?;
        Ok(user.and_then(|u| decode_user(&u)))
    }

    async fn relay(&self, signal: RelayedSignal) -> Result<(), Error> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.inner.node_topic(node_of(signal.to)))
            .arg(cluster::encode_signal(&signal));
        self.inner.command::<()>("signal", &cmd).await
    }

    async fn followed_elsewhere(&self, channel: &ChannelName) -> Result<bool, Error> {
        let topic = self.inner.topic(channel);
        let mut cmd = redis::cmd("PUBSUB");
        match self.inner.link.is_cluster() {
            true => cmd.arg("SHARDNUMSUB"),
            false => cmd.arg("NUMSUB"),
        };
        cmd.arg(&topic);
        let counts: std::collections::HashMap<String, u64> =
            self.inner.command("send", &cmd).await?;
        let here = u64::from(self.follows(channel));
        Ok(counts.get(&topic).is_some_and(|n| *n > here))
    }

    async fn disconnect(&self, user: &UserId, at: u64) -> Result<(), Error> {
        let text = cluster::encode_disconnect(user, at);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.inner.all_topic()).arg(text);
        self.inner.command::<()>("disconnect", &cmd).await
    }

    async fn claim(&self, job: &str, ttl_ms: u64) -> Result<bool, Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{{{}}}:claim:{job}", self.inner.prefix))
            .arg(self.inner.node)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);
        let set: Option<String> = self.inner.command("claim", &cmd).await?;
        Ok(set.is_some())
    }

    async fn renew(&self, members: Vec<Listed>) {
        let _ = self.inner.live_nodes(true).await;
        for listed in members {
            for chunk in listed.members.chunks(500) {
                let _ = self
                    .inner
                    .list(&listed.channel, chunk, listed.announce)
                    .await;
            }
        }
    }

    fn answer_with(&self, responder: Arc<dyn Responder>) {
        let _ = self.inner.responder.set(responder);
    }

    async fn survey(&self, question: &Question) -> Result<Survey, Error> {
        let inner = &self.inner;
        let me = inner.node;
        // Listed on the way: a node asks only once it answers others.
        let live = inner.live_nodes(true).await?;
        let id = inner.surveys.start(live.into_iter().filter(|n| *n != me));
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(inner.all_topic())
            .arg(cluster::encode_ask(id, me, question));
        let own = inner
            .responder
            .get()
            .map_or(serde_json::Value::Null, |r| r.answer(question));
        if let Err(e) = inner.command::<()>("survey", &cmd).await {
            inner.surveys.finish(id, (me, serde_json::Value::Null));
            return Err(e);
        }
        let _ = tokio::time::timeout(SURVEY_TIMEOUT, inner.surveys.complete(id)).await;
        Ok(inner.surveys.finish(id, (me, own)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_round_trip_and_strangers_are_refused() {
        for user in [None, Some(UserId::from("al:ice")), Some(UserId::from("-"))] {
            let text = encode_user(user.as_ref());
            assert_eq!(decode_user(text.as_bytes()), Some(user));
        }
        assert_eq!(decode_user(b"x"), None);
        assert_eq!(decode_user(b""), None);
    }
}
