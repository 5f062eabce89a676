use sqlx_atomic::non_atomic_requests;

const REPORTS: &str = "reports";

mod aliases {
    pub const AUDIT: &str = "audit";
}

#[non_atomic_requests(using = REPORTS)]
async fn constant() -> u8 {
    1
}

#[non_atomic_requests(using = ["default", aliases::AUDIT])]
async fn path_in_a_list() -> u8 {
    2
}

#[non_atomic_requests(using = 1)]
async fn number() -> u8 {
    3
}

#[non_atomic_requests(using = b"reports")]
async fn byte_string() -> u8 {
    4
}

#[non_atomic_requests(using = concat!("rep", "orts"))]
async fn macro_call() -> u8 {
    5
}

fn main() {
    let _ = REPORTS;
    let _ = (
        constant(),
        path_in_a_list(),
        number(),
        byte_string(),
        macro_call(),
    );
}
