use sqlx_atomic::atomic;

#[atomic]
const fn constant() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

fn main() {}
