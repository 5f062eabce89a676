use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests(using = "a", using = "b", using = "a")]
async fn repeated() -> u8 {
    1
}

#[non_atomic_requests(using = ["a", "b", "b"])]
async fn in_a_list() -> u8 {
    2
}

#[non_atomic_requests(using = "default", using = ["reports", r"default"])]
async fn mixed() -> u8 {
    3
}

fn main() {
    let _ = (repeated(), in_a_list(), mixed());
}
