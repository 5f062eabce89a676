#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::atomic;

mod db {
    pub type Result<T, E = sqlx_atomic::Error> = std::result::Result<T, E>;
}

#[atomic]
pub async fn std_result() -> std::result::Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic]
pub async fn core_result() -> ::core::result::Result<u8, sqlx_atomic::Error> {
    Ok(1)
}

#[atomic]
pub async fn alias_named_result() -> db::Result<String> {
    Ok(String::new())
}

macro_rules! atomic_fn {
    ($name:ident -> $ret:ty) => {
        #[atomic]
        pub async fn $name() -> $ret {
            Ok(Default::default())
        }
    };
}

atomic_fn!(from_macro_rules -> Result<u32, sqlx_atomic::Error>);

fn main() {}
