//! The web layer in a process where no databases were ever installed (its own test binary: the
//! registry is process-wide and, once installed, stays).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::get;
use sqlx_atomic::AtomicRequestsLayer;
use tower::{Layer, Service, ServiceExt};

static HANDLER_RAN: AtomicBool = AtomicBool::new(false);

async fn handler() -> StatusCode {
    HANDLER_RAN.store(true, Ordering::SeqCst);
    StatusCode::OK
}

/// The status of one `GET /` through `app`, after checking the body says why.
async fn status<S>(app: &S) -> StatusCode
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    let req = Request::get("/").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(
        &body[..],
        b"the request was not handled: no databases are installed"
    );
    status
}

/// Without databases the layer cannot give a request its transactions: every request is answered
/// with a 500 that says so, and the handler never runs, in both placements of the layer.
#[tokio::test]
async fn every_request_is_a_500_and_no_handler_runs() {
    assert!(!sqlx_atomic::is_installed());
    let routed = Router::new()
        .route("/", get(handler))
        .layer(AtomicRequestsLayer::new());
    let around = AtomicRequestsLayer::new().layer(Router::new().route("/", get(handler)));
    for _ in 0..2 {
        assert_eq!(status(&routed).await, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(&around).await, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert!(!HANDLER_RAN.load(Ordering::SeqCst), "a handler ran");
}
