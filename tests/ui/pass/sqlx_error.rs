#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::atomic;

// The most common signature in sqlx code is an atomic block as it is.
#[atomic]
pub async fn count() -> Result<i64, sqlx::Error> {
    let db = sqlx_atomic::sqlite("default");
    let n: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&db).await?;
    // `?` on the library's own errors too.
    sqlx_atomic::using("default").set_rollback(false)?;
    Ok(n)
}

#[atomic(using = "default", retry = 3)]
pub async fn retried() -> Result<(), sqlx::Error> {
    Ok(())
}

fn main() {}
