#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries, where `#[test]` functions are not compiled: what only they use is dead
// code and unused imports.
#![allow(dead_code, unused_imports)]
// What `#[sqlx_atomic::test]` accepts, as the attribute sees it; tests/test_attribute.rs compiles
// and runs the expansions as tests.

use sqlx_atomic as sa;

mod reexports {
    pub use sqlx_atomic as inner;
}

mod db {
    pub async fn setup() {}
}

async fn setup() {}

/// Documented.
#[sqlx_atomic::test]
async fn no_arguments() {}

#[sqlx_atomic::test(using = "reports")]
async fn one_alias() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[sqlx_atomic::test(using = ["default", "reports"], setup = db::setup)]
async fn a_list_and_a_setup() -> Result<(), String> {
    #![allow(unused_variables)]
    let unused = 1;
    Err("fails".into())
}

#[sqlx_atomic::test(using = "a", using = "b", crate = "crate::reexports::inner", setup = setup)]
#[should_panic(expected = "boom")]
async fn repeated_using_and_crate() {
    panic!("boom")
}

#[sa::test(crate = "sa")]
#[ignore = "slow"]
async fn renamed_import() {}

#[sqlx_atomic::test(using = "scratch")]
#[tokio::test]
async fn above_tokio_test() {}

#[sqlx_atomic::test]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_a_configured_tokio_test() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
