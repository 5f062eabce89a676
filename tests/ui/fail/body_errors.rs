use sqlx_atomic::atomic;

#[derive(Debug)]
struct OtherError;

fn other() -> Result<(), OtherError> {
    Ok(())
}

#[atomic]
async fn wrong_tail_type() -> Result<i64, sqlx_atomic::Error> {
    Ok("not a number")
}

#[atomic]
async fn missing_tail() -> Result<i64, sqlx_atomic::Error> {
    let _ = 1;
}

#[atomic]
async fn question_mark_without_from() -> Result<(), sqlx_atomic::Error> {
    other()?;
    Ok(())
}

fn main() {}
