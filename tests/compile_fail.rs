//! Misuse of `#[handler]` and `#[derive(Message)]` fails to compile, with
//! the error on the user's own token. `.stderr` files depend on the compiler
//! version: when the machine's rustc changes, refresh them with
//! `TRYBUILD=overwrite cargo test --test compile_fail` and review the diff.
#[test]
fn macro_misuse_is_a_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
