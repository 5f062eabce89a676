use sqlx_atomic::atomic;

#[atomic]
async fn maybe() -> Option<i32> {
    Some(1)
}

#[atomic]
async fn unit() -> () {}

#[atomic]
async fn tuple() -> (Result<(), sqlx_atomic::Error>, i32) {
    (Ok(()), 1)
}

fn main() {}
