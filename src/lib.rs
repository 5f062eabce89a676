#![forbid(unsafe_code)]
#![doc = include_str!("../README.md")]

pub use sqlx_atomic_macros::{atomic, non_atomic_requests};
pub use sqlx_atomic_runtime::*;

#[cfg(feature = "testing")]
pub use sqlx_atomic_macros::test;

#[doc = include_str!("../docs/django.md")]
pub mod coming_from_django {}
