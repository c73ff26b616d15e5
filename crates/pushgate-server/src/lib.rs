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

// Handlers refuse a request by returning the finished error response as
// `Err(Response<Body>)`: it is built once per refused request and returned
// straight to hyper, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod api;
pub mod chunked;
pub mod client_js;
pub mod config;
pub mod cors;
pub mod demo;
pub mod error;
pub mod http1;
pub mod hyper_conn;
pub mod metrics;
pub mod prefix_io;
pub mod registry;
pub mod routes;
pub mod server;
pub mod shared_tcp;
pub mod state;
pub mod transport;
pub mod web;

pub use config::Config;
pub use error::Error;
pub use server::Server;
