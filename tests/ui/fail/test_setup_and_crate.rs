async fn setup() {}

#[sqlx_atomic::test(setup = "setup")]
async fn setup_as_a_string() {}

#[sqlx_atomic::test(setup = setup())]
async fn setup_called() {}

#[sqlx_atomic::test(setup = setup, setup = setup)]
async fn setup_twice() {}

#[sqlx_atomic::test(crate = sqlx_atomic)]
async fn crate_not_a_string() {}

#[sqlx_atomic::test(crate = "::sqlx_atomic", crate = "::sqlx_atomic")]
async fn crate_twice() {}

#[sqlx_atomic::test(using)]
async fn no_value() {}

#[sqlx_atomic::test(using = "a" "b")]
async fn missing_comma() {}

fn main() {
    // The functions are still emitted: no error below.
    let _ = (
        setup_as_a_string(),
        setup_called(),
        setup_twice(),
        crate_not_a_string(),
        crate_twice(),
        no_value(),
        missing_comma(),
    );
}
