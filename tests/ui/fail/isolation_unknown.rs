use sqlx_atomic::atomic;

#[atomic(isolation = "snapshot")]
async fn unknown_level() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(isolation = Serializable)]
async fn not_a_string() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
