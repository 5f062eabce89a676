use sqlx_atomic::atomic;

#[atomic]
fn blocking() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}

struct Repo;

impl Repo {
    #[atomic]
    pub fn method(&self) -> Result<(), sqlx_atomic::Error> {
        Ok(())
    }
}

fn main() {
    // The function is still emitted, so its callers type-check: no error below.
    let _: Result<(), sqlx_atomic::Error> = blocking();
    let _: Result<(), sqlx_atomic::Error> = Repo.method();
}
