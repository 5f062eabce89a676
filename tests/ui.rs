//! Compile-time behaviour of `#[atomic]`, `#[non_atomic_requests]` (the `non_atomic_*` cases) and
//! `#[sqlx_atomic::test]` (the `test_*` cases): what they accept, and what they reject with which
//! message at which span. Regenerate the expected errors with
//! `TRYBUILD=overwrite cargo test --all-features --test ui`.
//!
//! The cases are binaries, where `#[test]` functions are not compiled: for `#[sqlx_atomic::test]`
//! they pin the attribute's own checks; tests/test_attribute.rs compiles its expansions as tests.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
