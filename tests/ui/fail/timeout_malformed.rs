use sqlx_atomic::atomic;

#[atomic(timeout = "5")]
async fn no_unit() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(timeout = "5h")]
async fn unknown_unit() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(timeout = "0s")]
async fn zero() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(timeout = "99999999999999999999ms")]
async fn too_long() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
