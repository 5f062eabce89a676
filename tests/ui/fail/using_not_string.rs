use sqlx_atomic::atomic;

#[atomic(using = 3)]
async fn integer_alias() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
