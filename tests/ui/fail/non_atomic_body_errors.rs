use sqlx_atomic::non_atomic_requests;

pub struct AppError;

// Mistakes in the body are reported in the user's code, against the declared return type.
#[non_atomic_requests]
async fn wrong_tail() -> String {
    1
}

#[non_atomic_requests]
async fn wrong_return(flag: bool) -> String {
    if flag {
        return 2;
    }
    String::new()
}

#[non_atomic_requests]
async fn no_conversion(text: &str) -> Result<u32, AppError> {
    let n: u32 = text.parse()?;
    Ok(n)
}

fn main() {}
