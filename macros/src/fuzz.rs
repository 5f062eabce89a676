//! Fuzz-style test of the attributes: random argument lists (and random items) must give a result
//! or an error, never a panic, and the output must be consistent with the parse.
//!
//! The inputs come from a fixed-seed xorshift generator over a vocabulary of argument names,
//! punctuation and literals, with balanced groups nested in, so every run checks the same inputs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use proc_macro2::TokenStream;
use quote::quote;

use crate::{atomic, non_atomic, test_attr};

/// Marsaglia's xorshift64.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Words of the random inputs: tokens, and some well-formed arguments, so that inputs get past the
/// first argument often enough.
const WORDS: &[&str] = &[
    "using",
    "savepoint",
    "durable",
    "isolation",
    "read_only",
    "lock",
    "timeout",
    "retry",
    "crate",
    "setup",
    "r#using",
    "r#setup",
    "r#crate",
    "foo",
    "self",
    "=",
    "=",
    ",",
    ",",
    "\"a\"",
    "\"b\"",
    "\"\"",
    "r\"a\"",
    "r#\"a\"#",
    "b\"a\"",
    "c\"a\"",
    "\"a\"suffix",
    "\"x::y\"",
    "\"::sqlx_atomic\"",
    "\"crate\"",
    "\"not a path\"",
    "\"(\"",
    "\"::\"",
    "true",
    "false",
    "1",
    "1.5",
    "'c'",
    "x::y",
    "::",
    "-",
    "#",
    "!",
    "'a",
    ";",
    ":",
    ".",
    "..",
    "_",
    "<",
    ">",
    "|",
    "&",
    "?",
    "using = \"a\"",
    "using = [\"a\", \"b\"]",
    "using = []",
    "savepoint = true",
    "durable = false",
    "isolation = \"serializable\"",
    "isolation = \"snapshot\"",
    "read_only = true",
    "lock = \"immediate\"",
    "timeout = \"5s\"",
    "timeout = \"0ms\"",
    "\"99999999999999999999m\"",
    "retry = 3",
    "retry = 0",
    "retry = Retry::new(2)",
    "savepoint = false",
    "crate = \"x::y\"",
    "setup = x::y",
    "setup = <T as U>::f",
    "#[tokio::test]",
    "#[test]",
];

const GROUPS: [(&str, &str); 3] = [("[", "]"), ("(", ")"), ("{", "}")];
/// Stray delimiters, rare: an input with one usually does not lex, and is skipped.
const STRAYS: [&str; 6] = ["[", "]", "(", ")", "{", "}"];

fn generate(rng: &mut XorShift, depth: usize, out: &mut String) {
    let len = rng.below(if depth == 0 { 12 } else { 5 });
    for _ in 0..len {
        if rng.below(64) == 0 {
            out.push_str(STRAYS[rng.below(STRAYS.len())]);
        } else if depth < 3 && rng.below(8) == 0 {
            let (open, close) = GROUPS[rng.below(GROUPS.len())];
            out.push_str(open);
            out.push(' ');
            generate(rng, depth + 1, out);
            out.push_str(close);
        } else {
            out.push_str(WORDS[rng.below(WORDS.len())]);
        }
        out.push(' ');
    }
}

const INPUTS: usize = 20_000;

/// Runs every parser and expansion on `args`, and the expansions on items built from the same
/// tokens; returns the broken invariants.
fn check(args: &TokenStream) -> Vec<String> {
    let item = quote!(
        async fn f() -> Result<(), E> {}
    );
    let test_item = quote!(
        async fn t() -> Result<(), E> {}
    );
    let composed_item = quote!(
        #[tokio::test]
        async fn t() {}
    );
    let mut broken = Vec::new();
    let atomic_ok = atomic::args::parse(args.clone()).is_ok();
    let non_atomic_ok = non_atomic::parse(args.clone()).is_ok();
    let test_ok = test_attr::parse(args.clone()).is_ok();
    for (name, parsed, item, out) in [
        (
            "atomic",
            atomic_ok,
            &item,
            atomic::atomic(args.clone(), item.clone()),
        ),
        (
            "non_atomic_requests",
            non_atomic_ok,
            &item,
            non_atomic::non_atomic_requests(args.clone(), item.clone()),
        ),
        (
            "test",
            test_ok,
            &test_item,
            test_attr::test(args.clone(), test_item.clone()),
        ),
        (
            "test (composed)",
            test_ok,
            &composed_item,
            test_attr::test(args.clone(), composed_item.clone()),
        ),
    ] {
        let text = out.to_string();
        let has_errors = text.contains("compile_error");
        if parsed == has_errors {
            broken.push(format!("{name}: parsed = {parsed} but output: {text}"));
        }
        if has_errors && !text.ends_with(&item.to_string()) {
            broken.push(format!(
                "{name}: the item is not re-emitted unchanged: {text}"
            ));
        }
        if !has_errors && syn::parse2::<syn::ItemFn>(out).is_err() {
            broken.push(format!("{name}: the expansion is not an fn item: {text}"));
        }
    }
    // The same tokens as the item, its return type, its parameters: errors or not, no panic.
    for item in [
        args.clone(),
        quote!(async fn f() -> #args {}),
        quote!(async fn f(#args) {}),
        quote!(async fn f() -> Result<(), E> { #args }),
        quote!(#args async fn f() {}),
    ] {
        atomic::atomic(TokenStream::new(), item.clone());
        non_atomic::non_atomic_requests(TokenStream::new(), item.clone());
        test_attr::test(TokenStream::new(), item);
    }
    broken
}

#[test]
fn random_arguments_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut lexed, mut panics, mut broken) = (0, Vec::new(), Vec::new());
    for _ in 0..INPUTS {
        let mut text = String::new();
        generate(&mut rng, 0, &mut text);
        let Ok(tokens) = TokenStream::from_str(&text) else {
            continue;
        };
        lexed += 1;
        match catch_unwind(AssertUnwindSafe(|| check(&tokens))) {
            Ok(found) => broken.extend(found.into_iter().map(|b| format!("`{text}`: {b}"))),
            Err(_) => panics.push(text),
        }
    }
    println!("{INPUTS} inputs generated, {lexed} lexed and checked");
    assert!(panics.is_empty(), "panics on: {panics:#?}");
    assert!(broken.is_empty(), "{broken:#?}");
    // The generator must keep producing inputs the parsers actually see.
    assert!(
        lexed > INPUTS * 3 / 4,
        "only {lexed} of {INPUTS} inputs lexed"
    );
}
