#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

//! Any return type goes through, `impl Trait` included, and `?` converts to the declared error.

use std::fmt::Display;

use sqlx_atomic::non_atomic_requests;

/// A stand-in for axum's `IntoResponse`.
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

#[derive(Debug, Default)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for (u16, &'static str) {
    fn into_response(self) -> Response {
        Response {
            status: self.0,
            body: self.1.to_owned(),
        }
    }
}

#[derive(Debug)]
pub enum AppError {
    Parse(std::num::ParseIntError),
}

impl From<std::num::ParseIntError> for AppError {
    fn from(error: std::num::ParseIntError) -> Self {
        AppError::Parse(error)
    }
}

#[non_atomic_requests]
pub async fn impl_into_response() -> impl IntoResponse {
    (201, "created")
}

#[non_atomic_requests]
pub async fn impl_display(n: u32) -> impl Display {
    n * 2
}

#[non_atomic_requests(using = "reports")]
pub async fn response() -> Response {
    Response::default()
}

#[non_atomic_requests]
pub async fn result(text: &str) -> Result<u32, AppError> {
    // The error type comes from the declared return type.
    let n = text.parse::<u32>()?;
    Ok(n + 1)
}

#[non_atomic_requests]
pub async fn result_of_impl(text: &str) -> Result<impl Display, AppError> {
    Ok(text.parse::<u32>()?)
}

#[non_atomic_requests]
pub async fn boxed_error(text: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    Ok(text.trim().parse::<u32>()?)
}

#[non_atomic_requests]
pub async fn borrowed<'a>(text: &'a str) -> &'a str {
    text.trim()
}

#[non_atomic_requests]
pub async fn elided(text: &str) -> (usize, &str) {
    (text.len(), text)
}

#[non_atomic_requests]
pub async fn into_conversion() -> String {
    "converted".into()
}

#[non_atomic_requests]
pub async fn collected() -> Vec<u32> {
    (0..3).collect()
}

fn main() {}
