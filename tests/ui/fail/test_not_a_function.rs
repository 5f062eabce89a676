#[sqlx_atomic::test]
pub struct Fixture {
    rows: u32,
}

#[sqlx_atomic::test(using = "reports")]
mod tests {}

#[sqlx_atomic::test]
impl Fixture {
    fn rows(&self) -> u32 {
        self.rows
    }
}

trait Suite {
    #[sqlx_atomic::test]
    async fn declared(&self);
}

fn main() {
    // The items are still emitted: no error below.
    let _ = Fixture { rows: 1 }.rows();
}
