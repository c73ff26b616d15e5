//! pushgate-server's integration tests: a real server on an ephemeral port,
//! driven over the wire by every transport and the publish API.
//!
//! One test binary with a module per area, not a binary per file: the whole
//! tree is linked once instead of ~20 times (faster builds, much less disk).

mod common;

mod abuse;
mod admin;
mod api;
mod auth;
mod backend_examples;
mod bad_input;
mod binary;
mod broker;
mod close_handshake;
mod command;
mod cors;
mod cross_transport;
mod direct;
mod direct_messages;
mod disconnect;
mod fanout;
mod hostile;
mod http1;
mod iframe;
mod limits;
mod longpoll;
mod ndjson;
mod openapi;
mod operations;
mod poll;
mod presence;
mod pubsub;
mod resume;
mod rtc;
mod shutdown;
mod sse;
mod tls;
mod users;
mod websocket;
mod websocket_deflate;
