const REPORTS: &str = "reports";

#[sqlx_atomic::test(using = "")]
async fn empty_alias() {}

#[sqlx_atomic::test(using = [])]
async fn empty_list() {}

#[sqlx_atomic::test(using = REPORTS)]
async fn not_a_literal() {}

#[sqlx_atomic::test(using = ["a", 1, b"c"])]
async fn not_strings() {}

#[sqlx_atomic::test(using = ["a", "b"], using = "a")]
async fn named_twice() {}

fn main() {
    // The functions are still emitted: no error below.
    let _ = (
        REPORTS,
        empty_alias(),
        empty_list(),
        not_a_literal(),
        not_strings(),
        named_twice(),
    );
}
