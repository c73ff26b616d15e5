//! Runs the endpoint an admitted request is for: hyper's service, and the
//! entry points the HTTP/1.1 front calls for what it serves itself.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{Request, Response};

use std::time::Instant;

use crate::access_log;
use crate::admin;
use crate::admission::{self, Admitted, Rejection};
use crate::api;
use crate::client_js;
use crate::cors;
use crate::demo;
use crate::routes::{Auth, Endpoint};
use crate::state::AppState;
use crate::transport::{command, iframe, longpoll, ndjson, poll, sse, ws};
use crate::web::{Body, RequestBody};

/// hyper's service: admission, then the endpoint.
pub async fn route(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<RequestBody>,
) -> Result<Response<Body>, Infallible> {
    let uri = req.uri();
    let admitted = match admission::admit(
        &state,
        peer,
        req.method(),
        uri.path(),
        uri.query(),
        req.headers(),
    ) {
        Ok(a) => a,
        Err(rejected) => return Ok(rejected.into_response()),
    };
    let api = admitted.route().auth == Auth::Api && admitted.route().endpoint != Endpoint::Publish;
    let started = api.then(|| (Instant::now(), req.method().clone()));
    let mut res = serve(&state, &admitted, peer, req).await;
    if let Some((started, method)) = started {
        api_answered(&state, &admitted, method.as_str(), started, res.status());
    }
    admitted.finish(&mut res);
    Ok(res)
}

/// Counts and logs a server API request once answered.
fn api_answered(
    state: &AppState,
    admitted: &Admitted,
    method: &str,
    started: Instant,
    status: http::StatusCode,
) {
    let route = admitted.route();
    state.metrics.api_request(route, status.as_u16());
    access_log::api_request(
        method,
        route.path,
        status.as_u16(),
        started.elapsed(),
        admitted.peer(),
    );
}

async fn serve(
    state: &Arc<AppState>,
    admitted: &Admitted,
    peer: SocketAddr,
    req: Request<RequestBody>,
) -> Response<Body> {
    if admitted.is_preflight() {
        return cors::preflight(admitted.origin());
    }
    match admitted.route().endpoint {
        Endpoint::Demo => demo::serve(state, &req),
        Endpoint::ClientJs => client_js::serve(),
        Endpoint::WebSocket | Endpoint::Echo => ws::handle(state.clone(), admitted, req).await,
        Endpoint::Sse
        | Endpoint::Ndjson
        | Endpoint::Iframe
        | Endpoint::Poll
        | Endpoint::LongPoll => {
            let (parts, _) = req.into_parts();
            subscribe(state, admitted, &parts).await
        }
        Endpoint::Command | Endpoint::Publish => post(state, admitted, peer, req).await,
        Endpoint::History => api::history(state.clone(), req).await,
        Endpoint::Send | Endpoint::Presence | Endpoint::Disconnect => api::users(state, req).await,
        Endpoint::Livez => crate::health::livez(),
        Endpoint::Readyz => crate::health::readyz(state),
        Endpoint::Batch => api::batch::batch(state.clone(), req).await,
        Endpoint::Broadcast => api::batch::broadcast(state.clone(), req).await,
        Endpoint::Channels => api::survey::channels(state, &req).await,
        Endpoint::Info => api::survey::info(state).await,
        Endpoint::Connections => api::survey::connections(state, &req).await,
        Endpoint::OpenApi => api::openapi(),
        Endpoint::Metrics => api::metrics(state),
        Endpoint::Admin => admin::serve(req.uri().path()),
    }
}

/// Serves an admitted POST with a body ([`Front::Post`] routes) from
/// `peer` (whose address keys a `/command` client's publish allowance).
/// Apart from [`route`] so that the front, which serves these itself, holds
/// only their state while a request runs, not that of every endpoint.
pub async fn post(
    state: &Arc<AppState>,
    admitted: &Admitted,
    peer: SocketAddr,
    req: Request<RequestBody>,
) -> Response<Body> {
    match admitted.route().endpoint {
        Endpoint::Command => command::handle(state.clone(), admitted.principal(), peer, req).await,
        Endpoint::Publish => {
            let started = Instant::now();
            let res = api::publish(state.clone(), req).await;
            api_answered(state, admitted, "POST", started, res.status());
            res
        }
        _ => Rejection::not_found(req.uri().path()).into_response(),
    }
}

/// Serves an admitted subscribing GET (`/sse`, `/stream`, `/iframe`,
/// `/poll`, `/longpoll`), which the front also serves itself.
pub async fn subscribe(state: &Arc<AppState>, admitted: &Admitted, req: &Parts) -> Response<Body> {
    // A waiting long-poll holds this future for as long as it waits, and a
    // future is as large as its largest branch: the others, which only open
    // a stream or answer at once, are boxed.
    match admitted.route().endpoint {
        Endpoint::Sse => Box::pin(sse::handle(state.clone(), admitted, req)).await,
        Endpoint::Ndjson => Box::pin(ndjson::handle(state.clone(), admitted, req)).await,
        Endpoint::Iframe => Box::pin(iframe::handle(state.clone(), admitted, req)).await,
        Endpoint::Poll => Box::pin(poll::handle(state.clone(), admitted, req)).await,
        Endpoint::LongPoll => longpoll::handle(state.clone(), admitted, req).await,
        _ => Rejection::not_found(req.uri.path()).into_response(),
    }
}
