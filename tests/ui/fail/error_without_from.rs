use sqlx_atomic::atomic;

#[derive(Debug)]
struct AppError;

#[atomic]
async fn custom_error() -> Result<i64, AppError> {
    Ok(1)
}

mod app {
    #[derive(Debug)]
    pub struct Problem;

    pub type Result<T> = std::result::Result<T, Problem>;
}

#[atomic(using = "default")]
async fn through_an_alias() -> app::Result<()> {
    Ok(())
}

fn main() {}
