#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

// A hook that only panics returns `!` (edition 2024), and is a hook like any other, sync or
// async, on the free function and on a transaction's handle.

use sqlx_atomic::{Error, atomic, on_commit};

#[atomic]
async fn panics() -> Result<(), Error> {
    on_commit(|| panic!("boom")).await?;
    Ok(())
}

#[atomic]
async fn panics_with_a_message(message: String) -> Result<(), Error> {
    on_commit(move || panic!("{message}")).await?;
    Ok(())
}

#[atomic]
async fn unreachable_and_todo() -> Result<(), Error> {
    on_commit(|| unreachable!()).await?;
    on_commit(|| todo!()).await?;
    on_commit(|| unimplemented!("later")).await?;
    Ok(())
}

#[atomic]
async fn declared_never() -> Result<(), Error> {
    on_commit(|| -> ! { panic!("boom") }).await?;
    on_commit(|| -> ! {
        loop {
            std::thread::park();
        }
    })
    .await?;
    Ok(())
}

#[atomic]
async fn named_and_robust() -> Result<(), Error> {
    on_commit(|| panic!("boom")).name("boom").robust().await?;
    sqlx_atomic::using("default")
        .on_commit(|| panic!("boom"))
        .await?;
    Ok(())
}

#[atomic]
async fn async_hooks_that_panic() -> Result<(), Error> {
    on_commit(|| async { panic!("boom") }).await?;
    on_commit(|| async move { unreachable!() }).await?;
    Ok(())
}

#[atomic]
async fn the_others_still_choose_their_kind() -> Result<(), Error> {
    on_commit(|| ()).await?;
    on_commit(|| Ok::<(), std::io::Error>(())).await?;
    on_commit(|| async {}).await?;
    on_commit(|| async { Err::<(), _>(std::io::Error::other("no")) }).await?;
    Ok(())
}

fn main() {}
