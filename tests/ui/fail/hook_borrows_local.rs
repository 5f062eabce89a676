// A hook must be `'static`: one that borrows a local or an argument of the body is reported at
// the hook and at what it borrows, as it would be without #[atomic], not at the attribute.

#[sqlx_atomic::atomic]
async fn borrows_a_local() -> Result<(), sqlx_atomic::Error> {
    let name = String::from("x");
    sqlx_atomic::on_commit(|| println!("{}", &name)).await?;
    Ok(())
}

#[sqlx_atomic::atomic]
async fn moves_a_reference_to_a_local() -> Result<(), sqlx_atomic::Error> {
    let name = String::from("x");
    let r = &name;
    sqlx_atomic::on_commit(move || println!("{r}")).await?;
    Ok(())
}

#[sqlx_atomic::atomic]
async fn borrows_an_argument(name: String) -> Result<(), sqlx_atomic::Error> {
    sqlx_atomic::on_commit(|| println!("{name}")).await?;
    Ok(())
}

#[sqlx_atomic::atomic]
async fn borrows_a_bound_argument(
    (first, mut second): (String, String),
) -> Result<(), sqlx_atomic::Error> {
    second.push_str(&first);
    sqlx_atomic::on_commit(|| println!("{second}")).await?;
    Ok(())
}

#[sqlx_atomic::atomic]
async fn moves_a_borrowed_argument(name: &str) -> Result<(), sqlx_atomic::Error> {
    sqlx_atomic::on_commit(move || println!("{name}")).await?;
    Ok(())
}

#[sqlx_atomic::atomic(retry = 2)]
async fn borrows_a_local_with_retry() -> Result<(), sqlx_atomic::Error> {
    let name = String::from("x");
    sqlx_atomic::on_commit(|| println!("{}", &name)).await?;
    Ok(())
}

#[sqlx_atomic::non_atomic_requests]
async fn handler_borrows_an_argument(name: String) -> &'static str {
    let _ = sqlx_atomic::on_commit(|| println!("{name}")).await;
    "ok"
}

fn main() {}
