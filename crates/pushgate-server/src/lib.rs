//! pushgate's server: the HTTP listener, the transports (thin adapters around
//! `pushgate_core::Connection`), the publish API and configuration.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pushgate_server::Error> {
//! let server = pushgate_server::Server::bind(pushgate_server::Config::default()).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(std::future::pending()).await
//! # }
//! ```

mod accept;
mod access_log;
mod admin;
mod admission;
mod api;
mod chunked;
mod client_js;
pub mod config;
mod cors;
mod demo;
mod dispatch;
mod error;
mod health;
mod http1;
mod http2;
mod hyper_conn;
mod linger;
pub mod metrics;
mod prefix_io;
mod redirect;
pub mod redis_broker;
mod registry;
pub mod routes;
mod server;
mod shared_tcp;
mod state;
pub mod store;
mod tls;
mod transport;
mod web;

pub use config::Config;
pub use error::{close_code, Error, Kind as ErrorKind};
pub use server::Server;
pub use state::AppState;

/// What the fuzz targets (`fuzz/`) drive directly: the pure parsers of
/// untrusted input. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::admission::Rejection;
    pub use crate::http1::{parse_head, Head, MAX_HEAD};
    pub use crate::routes::{find as find_route, Front};
    pub use crate::transport::sse::since_from;
    pub use crate::transport::ws_handshake::{accept_key, switching_protocols};
    pub use crate::web::{parse_subscribe_query, Body, MAX_QUERY_LEN};
}
