// Alone, `#[sqlx_atomic::test]` makes a `#[test]`, which the harness calls without arguments.

#[sqlx_atomic::test]
async fn with_a_fixture(rows: u32, name: &str) {
    let _ = (rows, name);
}

pub struct Suite;

impl Suite {
    #[sqlx_atomic::test]
    async fn method(&self) {}
}

fn main() {
    // The functions are still emitted: no error below.
    let _ = (with_a_fixture(1, "a"), Suite.method());
}
