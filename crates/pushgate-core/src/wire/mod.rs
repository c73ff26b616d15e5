//! Pure encoders from core types to transport wire formats. Transports call
//! these; nothing here touches a socket.

pub mod iframe;
pub mod ndjson;
pub mod poll;
pub mod sse;
