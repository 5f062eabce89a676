//! Helpers shared by the unit tests of the three attributes.

use proc_macro2::{TokenStream, TokenTree};

/// The messages of the `compile_error!`s an attribute emitted for `item`, in order, after
/// checking that the item itself follows them unchanged (so the rest of the crate still
/// type-checks). Each error is `::core::compile_error! { "message" }`.
pub(crate) fn rejected(
    expand: impl FnOnce(TokenStream, TokenStream) -> TokenStream,
    args: TokenStream,
    item: TokenStream,
) -> Vec<String> {
    let out = expand(args, item.clone());
    let text = out.to_string();
    assert!(
        text.ends_with(&item.to_string()),
        "the item must be emitted unchanged: {text}"
    );
    let mut messages = Vec::new();
    let mut after_bang = false;
    for token in out {
        if let (true, TokenTree::Group(group)) = (after_bang, &token)
            && let Some(TokenTree::Literal(lit)) = group.stream().into_iter().next()
        {
            messages.push(
                syn::parse_str::<syn::LitStr>(&lit.to_string())
                    .unwrap()
                    .value(),
            );
        }
        after_bang = matches!(&token, TokenTree::Punct(punct) if punct.as_char() == '!');
    }
    messages
}

/// What an argument parser made of `args`; panics with its message if it refused them.
pub(crate) fn parsed<T>(parse: impl FnOnce(TokenStream) -> syn::Result<T>, args: TokenStream) -> T {
    match parse(args.clone()) {
        Ok(parsed) => parsed,
        Err(error) => panic!("`{args}` should parse, got: {error}"),
    }
}

/// Every message an argument parser reported for `args`, in order; panics if it accepted them.
pub(crate) fn errors<T>(
    parse: impl FnOnce(TokenStream) -> syn::Result<T>,
    args: TokenStream,
) -> Vec<String> {
    match parse(args.clone()) {
        Ok(_) => panic!("`{args}` should be rejected"),
        Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
    }
}

/// [`errors`] of arguments given as source text (for inputs `quote!` cannot write).
pub(crate) fn errors_str<T>(
    parse: impl FnOnce(TokenStream) -> syn::Result<T>,
    args: &str,
) -> Vec<String> {
    let tokens: TokenStream = args
        .parse()
        .unwrap_or_else(|e| panic!("`{args}` does not lex: {e}"));
    errors(parse, tokens)
}
