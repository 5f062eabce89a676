// The built-in `#[test]` cannot run an `async fn`, and `#[sqlx_atomic::test]` already makes it a
// test.

#[sqlx_atomic::test]
#[test]
async fn twice_a_test() {}

#[sqlx_atomic::test(using = "reports")]
#[::core::prelude::v1::test]
async fn twice_a_test_by_path() {}

fn main() {
    // The functions are still emitted: no error below.
    let _ = (twice_a_test(), twice_a_test_by_path());
}
