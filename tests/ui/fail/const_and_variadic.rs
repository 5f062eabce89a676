use sqlx_atomic::atomic;

#[atomic]
const fn constant() -> Result<(), sqlx_atomic::Error> {
    Ok(())
}



#[atomic]
async unsafe extern "C" fn variadic(count: i32, mut rest: ...) -> Result<(), sqlx_atomic::Error> {
    let _ = (count, &mut rest);
    Ok(())
}
fn main() {}
