use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests(savepoint = false)]
async fn not_for_this_attribute() -> u8 {
    1
}

#[non_atomic_requests(usings = ["a", "b"])]
async fn misspelt() -> u8 {
    2
}

#[non_atomic_requests(using = "a", durable)]
async fn bare() -> u8 {
    3
}

fn main() {
    // The functions are still emitted: no error below.
    let _ = (not_for_this_attribute(), misspelt(), bare());
}
