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

pub mod api;
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod state;
pub mod transport;
pub mod web;

pub use config::Config;
pub use error::Error;
pub use server::Server;
