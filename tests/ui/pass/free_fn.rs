#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::atomic;

#[atomic]
async fn no_arguments(x: i64) -> Result<i64, sqlx_atomic::Error> {
    Ok(x + 1)
}

#[atomic]
pub async fn public_unit() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic]
pub(crate) async fn patterns_in_arguments(
    (a, b): (i64, i64),
    mut acc: Vec<i64>,
) -> Result<Vec<i64>, sqlx_atomic::Error> {
    acc.push(a);
    acc.push(b);
    Ok(acc)
}

#[allow(dead_code)]
async fn caller() -> Result<i64, sqlx_atomic::Error> {
    public_unit().await?;
    let v = patterns_in_arguments((1, 2), Vec::new()).await?;
    no_arguments(v[0]).await
}

fn main() {}
