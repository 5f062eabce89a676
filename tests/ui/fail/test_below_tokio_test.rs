// Attributes run from the top: here `#[tokio::test]` has already made the function synchronous
// when `#[sqlx_atomic::test]` sees it.

#[tokio::test]
#[sqlx_atomic::test]
async fn in_the_wrong_order() {}

fn main() {}
