use sqlx_atomic::atomic;

#[atomic(using = "")]
async fn empty_alias() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
