//! Pure encoders from core types to transport wire formats. Transports call
//! these; nothing here touches a socket.

pub mod sse;
