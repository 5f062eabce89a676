#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic as sa;

mod reexports {
    pub use sqlx_atomic as inner;
}

#[sqlx_atomic::atomic(crate = "sa")]
pub async fn renamed_import() -> Result<(), sa::Error> {
    Ok(())
}

#[sa::atomic(crate = "crate::reexports::inner", using = "other")]
pub async fn behind_a_reexport() -> Result<(), reexports::inner::Error> {
    Ok(())
}

fn main() {}
