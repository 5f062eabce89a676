use sqlx_atomic::atomic;

const ALIAS: &str = "reports";

mod aliases {
    pub const REPORTS: &str = "reports";
}

#[atomic(using = ALIAS)]
async fn constant() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

#[atomic(using = aliases::REPORTS)]
async fn path() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
