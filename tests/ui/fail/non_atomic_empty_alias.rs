use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests(using = "")]
async fn alone() -> u8 {
    1
}

#[non_atomic_requests(using = ["a", ""])]
async fn in_a_list() -> u8 {
    2
}

fn main() {
    let _ = (alone(), in_a_list());
}
