// `#[sqlx_atomic::test]` runs an `async fn`; a synchronous test needs no runtime.

#[sqlx_atomic::test]
fn synchronous() {}

#[sqlx_atomic::test(using = "reports")]
pub fn synchronous_with_result() -> Result<(), String> {
    Ok(())
}

fn main() {
    // The functions are still emitted: no error below.
    synchronous();
    let _ = synchronous_with_result();
}
