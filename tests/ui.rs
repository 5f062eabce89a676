//! Compile-time behaviour of `#[atomic]`: what it accepts, and what it rejects with which message
//! at which span. Regenerate the expected errors with `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
