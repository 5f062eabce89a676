use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests(using)]
async fn no_value() -> u8 {
    1
}

#[non_atomic_requests(using =)]
async fn missing_value() -> u8 {
    2
}

#[non_atomic_requests(using "a")]
async fn missing_equals() -> u8 {
    3
}

#[non_atomic_requests("a")]
async fn bare_alias() -> u8 {
    4
}

#[non_atomic_requests(using = "a" "b")]
async fn missing_comma() -> u8 {
    5
}

fn main() {
    let _ = (
        no_value(),
        missing_value(),
        missing_equals(),
        bare_alias(),
        missing_comma(),
    );
}
