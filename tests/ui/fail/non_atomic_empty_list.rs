use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests(using = [])]
async fn alone() -> u8 {
    1
}

#[non_atomic_requests(using = "a", using = [ ])]
async fn after_an_alias() -> u8 {
    2
}

fn main() {
    let _ = (alone(), after_an_alias());
}
