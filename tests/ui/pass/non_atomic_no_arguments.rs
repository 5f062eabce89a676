#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

//! `#[non_atomic_requests]` without arguments opts out of "default"; the handler's future stays
//! `Send`, so axum takes it as a handler.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests]
async fn status() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[non_atomic_requests]
pub async fn text(name: String) -> String {
    format!("hello {name}")
}

#[non_atomic_requests]
async fn nothing() {}

#[non_atomic_requests]
pub(crate) async fn with_attributes(x: u8) -> u8 {
    #![allow(unused_variables)]
    let unused = 0;
    x
}

fn assert_send<F: Future + Send>(_: F) {}

fn router() -> Router {
    assert_send(text(String::new()));
    assert_send(nothing());
    assert_send(with_attributes(1));
    Router::new().route("/", get(status))
}

fn main() {
    let _ = router;
}
