//! `#[non_atomic_requests]`: its arguments, its checks of the function, and its expansion, which
//! runs the handler's body outside the per-request transactions of the named aliases. The
//! signature, attributes and body tokens are re-emitted unchanged, with their spans.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{ParseStream, Parser};
use syn::{LitStr, Path, Signature};

use crate::emit::{self, Capture};
use crate::item::{self, FnItem};
use crate::parse::{AliasesAndCrate, Errors, Grammar, parse_arguments};

const ATTR: &str = "#[non_atomic_requests]";
const NOT_A_FN: &str =
    "#[non_atomic_requests] can only be applied to an `async fn` (a request handler)";
const NOT_ASYNC: &str = "#[non_atomic_requests] can only be applied to an `async fn`; request handlers are async functions";

/// The arguments of one `#[non_atomic_requests(..)]`, validated.
pub(crate) struct NonAtomicArgs {
    /// Every alias, in the order written, each once; `["default"]` when `using` is not given.
    aliases: Vec<LitStr>,
    /// `crate = "path"`, already parsed as a path.
    krate: Option<Path>,
}

/// The arguments `#[non_atomic_requests]` knows.
#[derive(Clone, Copy)]
enum Name {
    Using,
    Crate,
}

const NON_ATOMIC: Grammar<Name> = Grammar {
    attr: ATTR,
    expected: "`using` or `crate`",
    name: |name| match name {
        "using" => Some(Name::Using),
        "crate" => Some(Name::Crate),
        _ => None,
    },
    example: |name| match name {
        Name::Using => "using = \"default\"",
        Name::Crate => "crate = \"::sqlx_atomic\"",
    },
};

/// Parses the attribute's argument tokens, reporting every mistake at once.
pub(crate) fn parse(args: TokenStream) -> syn::Result<NonAtomicArgs> {
    Parser::parse2(parse_args, args)
}

fn parse_args(input: ParseStream<'_>) -> syn::Result<NonAtomicArgs> {
    let mut given = AliasesAndCrate::default();
    parse_arguments(
        input,
        &NON_ATOMIC,
        |name, ident, value, errors| match name {
            Name::Using => given.using(value, errors),
            Name::Crate => given.krate(&ident, value, errors),
        },
    )?;
    let (aliases, krate) = given.finish();
    Ok(NonAtomicArgs { aliases, krate })
}

/// Expands `#[non_atomic_requests(args)] item`. On any error, the output is the `compile_error!`s
/// followed by the item unchanged, so the rest of the crate still type-checks.
pub(crate) fn non_atomic_requests(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();

    let args = parse(args).map_err(|error| errors.push(error)).ok();
    let function = match syn::parse2::<FnItem>(item.clone()) {
        Ok(function) => {
            check_signature(&function.sig, &mut errors);
            Some(function)
        }
        Err(_) => {
            errors.push(item::not_a_function(item.clone(), NOT_A_FN, ATTR));
            None
        }
    };

    match (args, function) {
        (Some(args), Some(function)) if errors.is_empty() => wrap_body(args, function),
        _ => errors.then_item(item),
    }
}

/// Checks everything about the signature that the expansion relies on. The return type can be
/// anything: the body's value is passed through unchanged.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    item::reject_const_and_variadic(sig, ATTR, errors);
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(sig.fn_token.span, NOT_ASYNC));
    }
}

/// Re-emits the function with its body run by the runtime's opt-out.
fn wrap_body(args: NonAtomicArgs, function: FnItem) -> TokenStream {
    let FnItem {
        outer_attrs,
        vis,
        sig,
        brace,
        inner_attrs,
        body,
    } = function;
    // The runtime's calls here take any future: only the path itself can fail, where written.
    let krate = emit::crate_path(args.krate.as_ref(), None);
    let aliases = args.aliases;
    // The arguments are rebound as the body's locals, so that a borrow of one that outlives the
    // body (a hook's) is reported where it is made, as in `#[atomic]`.
    let (sig, rebinds) = emit::rebind_arguments(&sig);
    let body = emit::anchored_body(&sig, brace, quote!(#rebinds #body), Capture::Move);

    let mut tokens = quote!(#(#outer_attrs)* #vis #sig);
    brace.surround(&mut tokens, |tokens| {
        tokens.extend(quote! {
            #(#inner_attrs)*
            #krate::__private::non_atomic_requests(&[#(#aliases),*], #body)
            .await
        });
    });
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{EMPTY_ALIAS, EMPTY_LIST, NOT_A_STRING};

    fn aliases(args: TokenStream) -> Vec<String> {
        match parse(args.clone()) {
            Ok(parsed) => parsed.aliases.iter().map(LitStr::value).collect(),
            Err(error) => panic!("`{args}` should parse, got: {error}"),
        }
    }

    fn errors(args: TokenStream) -> Vec<String> {
        crate::test_util::errors(parse, args)
    }

    fn errors_str(args: &str) -> Vec<String> {
        crate::test_util::errors_str(parse, args)
    }

    #[test]
    fn aliases_in_every_form() {
        assert_eq!(aliases(quote!()), ["default"]);
        assert_eq!(aliases(quote!(using = "a")), ["a"]);
        assert_eq!(aliases(quote!(using = "a", using = "b")), ["a", "b"]);
        assert_eq!(aliases(quote!(using = ["a", "b",])), ["a", "b"]);
        assert_eq!(
            aliases(quote!(using = "a", crate = "x", using = ["b", "c"])),
            ["a", "b", "c"]
        );
        assert_eq!(aliases(quote!(r#using = r"a")), ["a"]);
        // Only `crate`: the default alias.
        assert_eq!(aliases(quote!(crate = "x::y")), ["default"]);
    }

    #[test]
    fn crate_override() {
        let krate = parse(quote!(crate = "my::sa")).unwrap().krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), quote!(my::sa).to_string());
        assert_eq!(
            errors(quote!(crate = "a", crate = "b")),
            ["duplicate argument `crate`"]
        );
        // A second `crate` is a duplicate even when the first one was wrong.
        assert_eq!(errors(quote!(crate = 1, crate = "b")).len(), 2);
        let messages = errors(quote!(crate = "not a path"));
        assert!(messages[0].starts_with("expected a string literal holding the path"));
    }

    #[test]
    fn alias_mistakes() {
        assert_eq!(
            errors(quote!(using = "a", using = "b", using = "a")),
            ["duplicate alias \"a\""]
        );
        assert_eq!(
            errors(quote!(using = ["a", "b", "b", "a"])),
            ["duplicate alias \"b\"", "duplicate alias \"a\""]
        );
        assert_eq!(errors(quote!(using = "")), [EMPTY_ALIAS]);
        assert_eq!(errors(quote!(using = ["a", ""])), [EMPTY_ALIAS]);
        assert_eq!(errors(quote!(using = [])), [EMPTY_LIST]);
        for not_a_string in [
            quote!(using = ALIAS),
            quote!(using = x::y),
            quote!(using = f()),
            quote!(using = 1),
            quote!(using = b"a"),
            quote!(using = ["a", REPORTS]),
            quote!(using = [["a"]]),
            quote!(using = ("a")),
        ] {
            assert_eq!(
                errors(not_a_string.clone()),
                [NOT_A_STRING],
                "{not_a_string}"
            );
        }
    }

    #[test]
    fn unknown_and_malformed_arguments() {
        assert_eq!(
            errors(quote!(savepoint = false)),
            ["unknown argument `savepoint` to #[non_atomic_requests]; expected `using` or `crate`"]
        );
        assert_eq!(
            errors_str("using"),
            ["expected `=` after `using`, e.g. `using = \"default\"`"]
        );
        assert_eq!(
            errors_str("using = \"a\" \"b\""),
            ["expected `,` between the arguments of #[non_atomic_requests]"]
        );
        assert_eq!(
            errors_str("\"a\""),
            ["expected an argument of #[non_atomic_requests]: `using` or `crate`"]
        );
    }

    #[test]
    fn every_error_is_reported() {
        assert_eq!(
            errors(quote!(
                foo,
                using = [],
                using = "",
                using = x,
                crate = 1,
                using = "a",
                using = "a"
            )),
            [
                "unknown argument `foo` to #[non_atomic_requests]; expected `using` or `crate`",
                EMPTY_LIST,
                EMPTY_ALIAS,
                NOT_A_STRING,
                "expected a string literal holding the path of the sqlx_atomic crate, e.g. crate = \
                 \"::sqlx_atomic\" or crate = \"my_app::sqlx_atomic\"",
                "duplicate alias \"a\"",
            ]
        );
    }

    fn expand(args: TokenStream, item: TokenStream) -> String {
        non_atomic_requests(args, item).to_string()
    }

    #[test]
    fn wraps_the_body_and_keeps_the_signature() {
        let out = expand(
            quote!(using = "a", using = ["b"], crate = "my::sa"),
            quote! {
                /// Docs.
                #[inline]
                pub async fn f<'a, T: Send>(&mut self, a: &'a T) -> Result<impl Display, E>
                where
                    T: Sync,
                {
                    #![allow(unused)]
                    if a.is_empty() {
                        return Ok(0);
                    }
                    Ok(body(a)?)
                }
            },
        );
        let expected = quote! {
            /// Docs.
            #[inline]
            pub async fn f<'a, T: Send>(&mut self, a: &'a T) -> Result<impl Display, E>
            where
                T: Sync,
            {
                #![allow(unused)]
                my::sa::__private::non_atomic_requests(&["a", "b"], async move {
                    if let ::core::option::Option::Some(__sqlx_atomic_ret) =
                        ::core::option::Option::None::<Result<_, E> >
                    {
                        return __sqlx_atomic_ret;
                    }
                    #[allow(clippy::diverging_sub_expression)]
                    let __sqlx_atomic_ret: Result<_, E> = {
                        #[allow(clippy::redundant_locals, clippy::shadow_same)]
                        let a = a;
                        if a.is_empty() {
                            return Ok(0);
                        }
                        Ok(body(a)?)
                    };
                    #[allow(unreachable_code)]
                    __sqlx_atomic_ret
                })
                .await
            }
        };
        assert_eq!(out, expected.to_string());
    }

    #[test]
    fn any_return_type() {
        for (output, anchor) in [
            (quote!(), quote!(())),
            (quote!(-> impl IntoResponse), quote!(_)),
            (quote!(-> Response), quote!(Response)),
            (
                quote!(-> (StatusCode, impl Display)),
                quote!((StatusCode, _)),
            ),
            (quote!(-> !), quote!(_)),
            (quote!(-> &'a str), quote!(&'a str)),
        ] {
            let out = expand(quote!(), quote!(async fn f() #output { x }));
            let expected = quote! {
                async fn f() #output {
                    ::sqlx_atomic::__private::non_atomic_requests(&["default"], async move {
                        if let ::core::option::Option::Some(__sqlx_atomic_ret) =
                            ::core::option::Option::None::<#anchor>
                        {
                            return __sqlx_atomic_ret;
                        }
                        #[allow(clippy::diverging_sub_expression)]
                        let __sqlx_atomic_ret: #anchor = { x };
                        #[allow(unreachable_code)]
                        __sqlx_atomic_ret
                    })
                    .await
                }
            };
            assert_eq!(out, expected.to_string(), "{output}");
        }
    }

    fn rejected(args: TokenStream, item: TokenStream) -> Vec<String> {
        crate::test_util::rejected(non_atomic_requests, args, item)
    }

    #[test]
    fn rejects_what_is_not_an_async_fn() {
        for item in [
            quote!(
                struct S;
            ),
            quote!(
                const C: u8 = 1;
            ),
            quote!(
                mod m {}
            ),
            quote!(impl S {}),
            quote!(
                trait T {}
            ),
        ] {
            assert_eq!(rejected(quote!(), item.clone()), [NOT_A_FN], "{item}");
        }
        assert_eq!(
            rejected(
                quote!(),
                quote!(
                    fn f() {}
                )
            ),
            [NOT_ASYNC]
        );
        let messages = rejected(
            quote!(),
            quote!(
                async fn f(&self) -> String;
            ),
        );
        assert_eq!(messages.len(), 1);
        assert!(
            messages[0].starts_with("#[non_atomic_requests] needs a function body"),
            "{}",
            messages[0]
        );
    }

    #[test]
    fn reports_argument_and_function_errors_together() {
        assert_eq!(
            rejected(
                quote!(using = "", foo = 1),
                quote!(
                    const fn f() -> u8 {
                        1
                    }
                )
            ),
            [
                EMPTY_ALIAS,
                "unknown argument `foo` to #[non_atomic_requests]; expected `using` or `crate`",
                "#[non_atomic_requests] cannot be applied to a `const fn`",
                NOT_ASYNC,
            ]
        );
    }
}
