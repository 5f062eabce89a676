#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic as sa;

mod reexports {
    pub use sqlx_atomic as inner;
}

#[sqlx_atomic::non_atomic_requests(crate = "sa")]
pub async fn renamed_import() -> u8 {
    1
}

#[sa::non_atomic_requests(crate = "crate::reexports::inner", using = ["a", "b"])]
pub async fn behind_a_reexport() -> u8 {
    2
}

#[sa::non_atomic_requests(using = "a", crate = "::sqlx_atomic")]
pub async fn absolute() -> u8 {
    3
}

fn main() {}
