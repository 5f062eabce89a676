use sqlx_atomic::non_atomic_requests;

trait Handler {
    #[non_atomic_requests]
    async fn handle(&self) -> String;
}

fn main() {}
