use sqlx_atomic::atomic;

// rustc rejects this function by itself too; #[atomic] says why it does not apply, and leaves
// the function out so that its message is the only one.
#[atomic]
async unsafe extern "C" fn variadic(count: i32, mut rest: ...) -> Result<(), sqlx_atomic::Error> {
    let _ = (count, &mut rest);
    Ok(())
}

fn main() {}
