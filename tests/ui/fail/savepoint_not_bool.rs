use sqlx_atomic::atomic;

#[atomic(savepoint = "no")]
async fn string() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(durable = 1)]
async fn integer() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
