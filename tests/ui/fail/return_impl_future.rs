use std::future::Future;

use sqlx_atomic::atomic;

#[atomic]
async fn future() -> impl Future<Output = Result<(), sqlx_atomic::Error>> {
    async { Ok(()) }
}

#[atomic]
async fn boxed() -> Box<dyn std::error::Error> {
    "no".into()
}

fn main() {}
