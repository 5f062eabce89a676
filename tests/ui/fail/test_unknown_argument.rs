#[sqlx_atomic::test(savepoint = false)]
async fn an_atomic_argument() {}

#[sqlx_atomic::test(usings = ["a", "b"])]
async fn misspelt() {}

#[sqlx_atomic::test(using = "a", durable)]
async fn bare() {}

fn main() {
    // The functions are still emitted: no error below.
    let _ = (an_atomic_argument(), misspelt(), bare());
}
