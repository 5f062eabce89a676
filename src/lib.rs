#![forbid(unsafe_code)]
#![doc = include_str!("../README.md")]

pub use sqlx_atomic_macros::atomic;
pub use sqlx_atomic_runtime::*;
