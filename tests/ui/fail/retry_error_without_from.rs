// A retried function whose error type lacks `From<sqlx_atomic::Error>` is reported once, on its
// return type, as without `retry`.
use sqlx_atomic::atomic;

#[derive(Debug)]
struct AppError;

#[atomic(retry = 3)]
async fn retried() -> Result<i64, AppError> {
    Ok(1)
}

fn main() {}
