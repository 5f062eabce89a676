// Errors inside the body are reported in the user's code, as without #[atomic].
use sqlx_atomic::atomic;

#[derive(Debug)]
struct AppError;

impl From<sqlx_atomic::Error> for AppError {
    fn from(_: sqlx_atomic::Error) -> Self {
        AppError
    }
}

#[derive(Debug)]
struct OtherError;

fn other() -> Result<(), OtherError> {
    Ok(())
}

#[atomic]
async fn wrong_tail_type() -> Result<i64, AppError> {
    Ok("not a number")
}

#[atomic]
async fn missing_tail() -> Result<i64, AppError> {
    let _ = 1;
}

#[atomic]
async fn question_mark_without_from() -> Result<(), AppError> {
    other()?;
    Ok(())
}

fn main() {}
