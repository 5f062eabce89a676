use sqlx_atomic::atomic;

#[derive(Debug)]
struct AppError;

#[atomic]
async fn custom_error() -> Result<i64, AppError> {
    Ok(1)
}

#[atomic(using = "default")]
async fn string_error() -> std::result::Result<(), String> {
    Ok(())
}

fn main() {}
