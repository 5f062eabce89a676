use sqlx_atomic::atomic;

#[atomic(lock = "shared")]
async fn unknown_mode() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
