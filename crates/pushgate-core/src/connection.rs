//! One client connection's command handling, shared by every transport.
//!
//! A transport decodes bytes into a [`Request`], calls [`Connection::execute`],
//! encodes the [`Reply`], and passes the returned events (catch-up) and every
//! event drained from the outbox through [`Connection::accept`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::channel::ChannelName;
use crate::cursor::Since;
use crate::error::{Error, ErrorKind};
use crate::hub::{DirectSink, Hub, Outbox, OutboxEvent, Subscriber, SubscriberId};
use crate::principal::Principal;
use crate::protocol::{Command, DirectMessage, Publish, Reply, Request, Signal};
use crate::rate::TokenBucket;
use crate::session::{start_at, Emit, Session};

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events queued for a connection before it counts as too slow.
    pub outbox_capacity: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            outbox_capacity: 1024,
            max_subscriptions: 128,
        }
    }
}

/// One client connection as every transport sees it: its session, its
/// outbox, and the hub it subscribes through. Dropping it unsubscribes
/// everything.
pub struct Connection {
    hub: Arc<Hub>,
    principal: Principal,
    subscriber: Subscriber,
    session: Session,
    /// What it may still publish and send (see [`Connection::spend_publish_token`]).
    publish_tokens: TokenBucket,
}

impl Connection {
    /// A connection of `principal` with no subscriptions; `id` must be
    /// unique among the hub's live connections. A connection of a user is
    /// known to [`Hub::disconnect`] until dropped.
    pub fn new(hub: Arc<Hub>, id: SubscriberId, limits: Limits, principal: Principal) -> Self {
        let outbox = Outbox::new(limits.outbox_capacity);
        if let Some(user) = principal.user() {
            hub.register_user(&user.id, id, &outbox);
        }
        Connection {
            hub,
            principal,
            subscriber: Subscriber { id, outbox },
            session: Session::new(limits.max_subscriptions),
            publish_tokens: TokenBucket::default(),
        }
    }

    /// A connection that stays out of presence and hears no join/leave: a
    /// poll or long-poll request, which is no held connection.
    pub fn without_presence(mut self) -> Self {
        self.session.leave_presence_out();
        self
    }

    /// Its id as clients see it in presence (`"client"`).
    pub fn id(&self) -> SubscriberId {
        self.subscriber.id
    }

    /// Where fan-out puts this connection's events; the transport drains it.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.subscriber.outbox
    }

    /// Its subscriptions, positions and cursor.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Who this connection is, as admission established it.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The hub it subscribes and publishes through.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Subscribes to `channel` from `since`. On success the caller sends the
    /// `subscribed` reply, then passes the events through [`Connection::accept`].
    pub async fn subscribe(
        &mut self,
        channel: ChannelName,
        since: &Since,
    ) -> Result<(Reply, Vec<OutboxEvent>), Error> {
        self.hub
            .policy()
            .check_subscribe(&self.principal, &channel)?;
        self.session.check_subscribe(&channel)?;
        let user = self.principal.user().map(|u| &u.id);
        let member = self.session.takes_part_in_presence().then_some(user);
        let (catchup, room) = self
            .hub
            .subscribe_as(
                &channel,
                start_at(since, &channel),
                &self.subscriber,
                member,
            )
            .await?;
        let room = room.map(|others| Box::new(self.hub.room_join(self.id(), user, others)));
        let reply = Reply::Subscribed {
            channel,
            position: catchup.position.clone(),
            room,
        };
        let events = self.session.subscribed(catchup);
        Ok((reply, events))
    }

    /// Runs one command at `now`; errors become `Reply::Error`.
    pub async fn execute(&mut self, request: Request, now: Instant) -> (Reply, Vec<OutboxEvent>) {
        if request.command.counts_toward_publish_rate() {
            if let Err(e) = self.spend_publish_token(now) {
                return (Reply::Error(e), Vec::new());
            }
        }
        let result = match request.command {
            Command::Subscribe { channel, since } => self.subscribe(channel, &since).await,
            Command::Unsubscribe { channel } => match self.session.unsubscribe(&channel) {
                Ok(()) => {
                    self.hub.unsubscribe(&channel, self.subscriber.id);
                    Ok((Reply::Unsubscribed { channel }, Vec::new()))
                }
                Err(e) => Err(e),
            },
            Command::Publish(publish) => self.publish(publish).await,
            Command::Ping => Ok((Reply::Pong, Vec::new())),
            Command::Auth { token } => self.reauthenticate(&token),
            Command::Send(message) => self.send(message).await,
            Command::Presence { channel } => self.presence(&channel).await,
            Command::Signal(signal) => self.signal(signal).await,
        };
        result.unwrap_or_else(|e| (Reply::Error(e), Vec::new()))
    }

    /// The one gate of every command that makes the server work for other
    /// clients (`publish`, `send`, `signal`): one token of this connection's bucket,
    /// at the policy's publish rate. Refused: a
    /// [`crate::ErrorKind::RateLimited`] saying when to retry, and the
    /// connection goes on.
    pub fn spend_publish_token(&mut self, now: Instant) -> Result<(), Error> {
        let Some(rate) = self.hub.policy().publish_rate() else {
            return Ok(());
        };
        self.publish_tokens
            .take(rate, now)
            .map_err(|wait| rate.refusal(wait))
    }

    async fn publish(&mut self, publish: Publish) -> Result<(Reply, Vec<OutboxEvent>), Error> {
        let Publish {
            channel,
            event,
            data,
        } = publish;
        self.hub.policy().check_publish(&self.principal, &channel)?;
        let p = self.hub.publish(channel, event, data).await?;
        let reply = Reply::Published {
            channel: p.channel.clone(),
            position: p.position(),
        };
        Ok((reply, Vec::new()))
    }

    /// A direct message: appended to each recipient's personal channel,
    /// with this connection's user as `from`.
    async fn send(&mut self, message: DirectMessage) -> Result<(Reply, Vec<OutboxEvent>), Error> {
        self.hub.policy().check_send(&self.principal)?;
        let from = self.principal.user().map(|u| &u.id);
        let recipients = self
            .hub
            .send(from, &message.to, message.event, &message.data)
            .await?;
        Ok((Reply::Sent(recipients), Vec::new()))
    }

    /// A WebRTC signal to another member of a room, from this connection
    /// or from the one its `client_key` proves (a client that sends over
    /// `POST /command` and receives on a stream).
    async fn signal(&mut self, signal: Signal) -> Result<(Reply, Vec<OutboxEvent>), Error> {
        let Signal {
            room,
            to,
            from,
            data,
        } = signal;
        let limit = self.hub.rtc().signal_limit();
        if data.as_str().len() > limit {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "signal data is {} bytes of JSON, more than max_signal_size ({limit})",
                    data.as_str().len()
                ),
            ));
        }
        let from = match from {
            None => self.id(),
            Some((id, key)) if self.hub.check_client_key(id, &key) => id,
            Some((id, _)) => {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    format!(
                        "client_key is not client {id}'s: use the one its subscribed reply gave"
                    ),
                ))
            }
        };
        self.hub.signal(&room, from, to, &data).await?;
        Ok((Reply::Signaled { room, to }, Vec::new()))
    }

    /// Who is on `channel`: allowed to whoever may subscribe to it.
    async fn presence(
        &mut self,
        channel: &ChannelName,
    ) -> Result<(Reply, Vec<OutboxEvent>), Error> {
        self.hub
            .policy()
            .check_subscribe(&self.principal, channel)?;
        let presence = self.hub.presence(channel).await?;
        Ok((Reply::Presence(presence), Vec::new()))
    }

    /// A fresh token (`auth`): it must name the same user, since the
    /// connection's subscriptions and presence were granted to that user.
    /// An anonymous connection may become a user's.
    fn reauthenticate(&mut self, token: &str) -> Result<(Reply, Vec<OutboxEvent>), Error> {
        let now = self.hub.clock().now() / 1000;
        let principal = self.hub.policy().authenticate(Some(token), now)?;
        let user = principal.user().expect("a token makes a user").clone();
        match &self.principal {
            Principal::User(old) if old.id != user.id => {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    "this token is another user's: a connection keeps its user (open a new one)",
                ))
            }
            Principal::Anonymous if !self.session.is_empty() => return Err(Error::new(
                ErrorKind::Forbidden,
                "send \"auth\" before subscribing: subscriptions made anonymously stay anonymous",
            )),
            _ => {}
        }
        let reply = Reply::Authed {
            user: user.id.clone(),
            expires: user.expires,
        };
        if self.principal.user().is_none() {
            self.hub
                .register_user(&user.id, self.subscriber.id, &self.subscriber.outbox);
        }
        self.principal = principal;
        Ok((reply, Vec::new()))
    }

    /// Turns one event into what must be sent (see [`Session::accept`]).
    pub fn accept(&mut self, event: OutboxEvent, out: &mut Vec<Emit>) {
        self.session.accept(event, out);
    }

    /// Parks the connection: fan-out may write its next messages through
    /// `sink` until [`Connection::unpark`]. `false` when events are queued.
    pub fn park(&mut self, sink: &Arc<dyn DirectSink>) -> bool {
        self.session.park(&self.subscriber.outbox, sink)
    }

    /// Ends parking; the session stands where fan-out's writes left it.
    /// Returns the unwritten end of a frame, to be written first.
    pub fn unpark(&mut self) -> Option<Bytes> {
        self.session.unpark(&self.subscriber.outbox)
    }

    /// [`Connection::accept`] for every event, in order.
    pub fn accept_all(
        &mut self,
        events: impl IntoIterator<Item = OutboxEvent>,
        out: &mut Vec<Emit>,
    ) {
        self.accept_each(events, |e| out.push(e));
    }

    /// [`Connection::accept_all`] handing each emit to `emit` as it comes:
    /// no buffer on the delivery path.
    pub fn accept_each(
        &mut self,
        events: impl IntoIterator<Item = OutboxEvent>,
        mut emit: impl FnMut(Emit),
    ) {
        for event in events {
            self.session.accept_with(event, &mut emit);
        }
    }
}

/// Dropping a connection, however its request or socket ended, removes its
/// subscriptions from the hub: no waiter or subscriber outlives its client.
impl Drop for Connection {
    fn drop(&mut self) {
        self.unpark();
        for channel in self.session.channels() {
            self.hub.unsubscribe(channel, self.subscriber.id);
        }
        if let Some(user) = self.principal.user() {
            self.hub.unregister_user(&user.id, &self.subscriber.outbox);
        }
    }
}
