#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests(using = "default")]
pub async fn one() -> u8 {
    1
}

#[non_atomic_requests(using = "a", using = "b")]
pub async fn repeated() -> u8 {
    2
}

#[non_atomic_requests(using = ["a", "b", "c"])]
pub async fn list() -> u8 {
    3
}

#[non_atomic_requests(using = ["a"],)]
pub async fn list_of_one_and_trailing_comma() -> u8 {
    1
}

#[non_atomic_requests(using = "a", using = ["b", "c"], using = r"d")]
pub async fn mixed() -> u8 {
    4
}

#[sqlx_atomic::non_atomic_requests(r#using = "reports")]
pub async fn by_path_and_raw_identifier() -> u8 {
    1
}

macro_rules! opted_out {
    ($alias:expr) => {
        #[non_atomic_requests(using = $alias)]
        pub async fn from_a_macro() -> u8 {
            5
        }
    };
}

opted_out!("macro_alias");

fn main() {}
