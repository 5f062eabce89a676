use sqlx_atomic::atomic;

#[atomic(retry = 0)]
async fn never_retried() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(retry = -1)]
async fn negative() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
