#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::{Error, atomic};

/// Doc comments stay on the function.
#[atomic]
#[must_use = "the block does nothing unless awaited"]
#[allow(clippy::needless_return)]
pub async fn outer_attributes() -> Result<(), Error> {
    return Ok(());
}

#[atomic]
pub async fn inner_attributes() -> Result<(), Error> {
    #![allow(unused_variables)]
    //! An inner doc comment is an inner attribute too.
    let unused = 1;
    Ok(())
}

#[atomic]
#[cfg(any())]
pub async fn configured_out() -> Result<(), Error> {
    this_does_not_exist()
}

#[rustfmt::skip]
#[atomic] pub async fn one_line() -> Result<i32, Error> { Ok(1) }

fn main() {}
