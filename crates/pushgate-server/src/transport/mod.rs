//! Transports: thin adapters between the wire and `pushgate_core::Connection`.
//! One module per transport, named after it.

pub mod sse;
pub mod stream;
pub mod ws;
mod ws_handshake;
