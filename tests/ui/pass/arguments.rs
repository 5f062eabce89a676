#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::{Error, atomic};

#[atomic(using = "reports")]
pub async fn using_only() -> Result<(), Error> {
    Ok(())
}

#[atomic(savepoint = false)]
pub async fn savepoint_only() -> Result<(), Error> {
    Ok(())
}

#[atomic(durable = true)]
pub async fn durable_only() -> Result<(), Error> {
    Ok(())
}

#[atomic(crate = "::sqlx_atomic")]
pub async fn crate_only() -> Result<(), Error> {
    Ok(())
}

#[atomic(using = "reports", savepoint = false)]
pub async fn using_and_savepoint() -> Result<(), Error> {
    Ok(())
}

#[atomic(durable = false, using = "other")]
pub async fn durable_and_using() -> Result<(), Error> {
    Ok(())
}

#[atomic(savepoint = true, durable = true)]
pub async fn savepoint_and_durable() -> Result<(), Error> {
    Ok(())
}

#[atomic(
    using = "a",
    savepoint = true,
    durable = false,
    crate = "::sqlx_atomic"
)]
pub async fn all_four() -> Result<(), Error> {
    Ok(())
}

#[atomic(crate = "sqlx_atomic", durable = true, savepoint = false, using = "b")]
pub async fn all_four_reversed_with_trailing_comma() -> Result<(), Error> {
    Ok(())
}

#[atomic()]
pub async fn empty_parentheses() -> Result<(), Error> {
    Ok(())
}

#[sqlx_atomic::atomic(using = "default")]
pub async fn through_a_path() -> Result<(), Error> {
    Ok(())
}

fn main() {}
