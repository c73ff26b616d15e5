//! The page at `/` and the clock it shows: the server publishes its time on
//! channel `clock` every second while `demo` is on.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use pushgate_core::{ChannelName, Data};

use crate::state::AppState;
use crate::web::{text, Body};

const INDEX: &str = include_str!("../assets/index.html");

pub fn index() -> Response<Body> {
    text(StatusCode::OK, "text/html; charset=utf-8", INDEX)
}

/// Publishes `{"unix_ms": N}` on `clock` once a second.
pub async fn clock(state: Arc<AppState>) {
    let channel = ChannelName::new("clock").expect("static name is valid");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let data = Data::json(&format!("{{\"unix_ms\":{ms}}}")).expect("a JSON object");
        if let Err(e) = state.hub.publish(channel.clone(), None, data).await {
            tracing::warn!(error = %e, "demo clock could not publish");
        }
    }
}
