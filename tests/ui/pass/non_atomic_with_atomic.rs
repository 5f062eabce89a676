#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

//! A handler out of the request transaction calls an `#[atomic]` function: a block of its own.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use sqlx_atomic::non_atomic_requests;

#[derive(Debug)]
pub struct AppError;

impl From<sqlx_atomic::Error> for AppError {
    fn from(_: sqlx_atomic::Error) -> Self {
        AppError
    }
}

#[sqlx_atomic::atomic(using = "reports")]
async fn record(what: &str) -> Result<usize, AppError> {
    Ok(what.len())
}

#[non_atomic_requests(using = "reports")]
async fn handler() -> Result<StatusCode, StatusCode> {
    match record("order").await {
        Ok(_) => Ok(StatusCode::CREATED),
        Err(AppError) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

#[non_atomic_requests(using = ["default", "reports"])]
async fn question_mark() -> Result<usize, AppError> {
    let n = record("a").await?;
    Ok(n + record("b").await?)
}

fn main() {
    let _: Router = Router::new().route("/", post(handler));
    let _ = question_mark;
}
