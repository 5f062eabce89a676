use sqlx_atomic::atomic;

#[atomic(using)]
async fn missing_equals() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(using =)]
async fn missing_value() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(using = "a" "b")]
async fn missing_comma() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(savepoint = false,, durable = true)]
async fn double_comma() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(crate = sqlx_atomic)]
async fn unquoted_crate() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
