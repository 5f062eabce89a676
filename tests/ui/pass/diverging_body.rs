#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::{Error, atomic};

#[atomic]
pub async fn always_returns() -> Result<i32, Error> {
    return Ok(1);
}

#[atomic]
pub async fn returns_from_every_branch(flag: bool) -> Result<i32, Error> {
    if flag {
        return Ok(1);
    } else {
        return Ok(2);
    }
}

#[atomic]
pub async fn unfinished() -> Result<i32, Error> {
    todo!()
}

#[atomic]
pub async fn panics(message: &str) -> Result<(), Error> {
    panic!("{message}")
}

#[atomic]
pub async fn loops_forever() -> Result<(), Error> {
    loop {
        std::hint::spin_loop();
    }
}

fn main() {}
