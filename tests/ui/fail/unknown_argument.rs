use sqlx_atomic::atomic;

#[atomic(usign = "default")]
async fn typo() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(deferrable = true, savepoint = false)]
async fn unsupported() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
