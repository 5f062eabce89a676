use sqlx_atomic::atomic;

#[atomic(retry = 3, savepoint = false)]
async fn retried_yet_nested() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
