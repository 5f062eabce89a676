use sqlx_atomic::atomic;

trait Orders {
    #[atomic]
    async fn place(&self) -> Result<(), sqlx_atomic::Error>;
}

fn main() {}
