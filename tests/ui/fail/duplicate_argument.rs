use sqlx_atomic::atomic;

#[atomic(using = "default", savepoint = false, using = "reports")]
async fn twice() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
