#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

//! `return` and `?` in the body return from the handler, with the handler's type.

use sqlx_atomic::non_atomic_requests;

#[derive(Debug)]
pub struct AppError;

impl From<std::num::ParseIntError> for AppError {
    fn from(_: std::num::ParseIntError) -> Self {
        AppError
    }
}

#[non_atomic_requests]
pub async fn early_return(flag: bool) -> String {
    if flag {
        return "early".to_owned();
    }
    "late".to_owned()
}

#[non_atomic_requests]
pub async fn always_returns() -> u8 {
    return 1;
}

#[non_atomic_requests]
pub async fn returns_into(flag: bool) -> String {
    if flag {
        return "converted".into();
    }
    String::new()
}

#[non_atomic_requests]
pub async fn return_and_question_mark(text: &str) -> Result<u32, AppError> {
    if text.is_empty() {
        return Err(AppError);
    }
    let n: u32 = text.parse()?;
    if n == 0 {
        return Ok(0);
    }
    Ok(n * 2)
}

#[non_atomic_requests]
pub async fn return_needs_the_declared_type(flag: bool) -> Box<dyn std::fmt::Display> {
    if flag {
        // Unsized to `Box<dyn Display>` only because the expected type is known here.
        return Box::new(1);
    }
    Box::new("two")
}

#[non_atomic_requests]
pub async fn return_impl(flag: bool) -> impl std::fmt::Display {
    if flag {
        return 1;
    }
    2
}

#[non_atomic_requests]
pub async fn return_unit(flag: bool) {
    if flag {
        return;
    }
    let _ = flag;
}

#[non_atomic_requests]
pub async fn return_in_a_loop(items: Vec<u8>) -> Option<u8> {
    for item in items {
        if item > 2 {
            return Some(item);
        }
    }
    None
}

#[non_atomic_requests]
pub async fn unfinished() -> String {
    todo!()
}

#[non_atomic_requests]
pub async fn loops_forever() -> u8 {
    loop {
        std::hint::spin_loop();
    }
}

#[non_atomic_requests]
pub async fn never() -> ! {
    panic!("never returns")
}

fn main() {}
