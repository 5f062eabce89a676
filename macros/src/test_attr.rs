//! `#[sqlx_atomic::test]`: its arguments, its checks of the function, and its two expansions.
//!
//! - Alone on an `async fn`, it replaces `#[tokio::test]`: the function becomes a synchronous
//!   `#[test]` whose body runs on the runtime's shared test runtime (`testing::block_on`).
//! - With another test attribute (any path ending in `test`, such as `#[tokio::test]`), that one
//!   stays and only the body is wrapped; the function stays async.
//!
//! Either way the body runs inside `testing::rollback_after`, after the optional `setup` function
//! and the installation of the databases named by the environment (`testing::__prepare`). The
//! attributes, visibility, signature and body tokens are re-emitted with their spans.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprPath, LitStr, Meta, Path, TraitItemFn};

use crate::emit::{self, Capture};
use crate::item::{self, FnItem};
use crate::parse::{
    AliasesAndCrate, Errors, Grammar, duplicate_argument, parse_arguments, ungroup,
};

const ATTR: &str = "#[sqlx_atomic::test]";
const NOT_A_FN: &str = "#[sqlx_atomic::test] can only be applied to an `async fn` (a test)";
const NOT_A_FN_DECLARATION: &str = "#[sqlx_atomic::test] needs a function body; a test is a \
     free `async fn` with a body, not a method declared in a trait";
const NOT_ASYNC: &str = "#[sqlx_atomic::test] can only be applied to an `async fn`";
const NOT_ASYNC_REWRITTEN: &str = "#[sqlx_atomic::test] can only be applied to an `async fn`, and \
     this one is synchronous: an async test attribute written above it, such as #[tokio::test], \
     has already rewritten the function; put #[sqlx_atomic::test] first";
const PARAMETERS: &str = "a test function cannot take parameters; a test that needs a fixture can \
     build it in its body, or in the `setup` function (`#[sqlx_atomic::test(setup = path)]`)";
const BUILTIN_TEST: &str = "remove this `#[test]`: #[sqlx_atomic::test] already makes the \
     function a test, run on a tokio runtime it shares with the other tests; to run it on a \
     runtime of its own, write an async test attribute such as #[tokio::test] instead";
const NOT_A_PATH: &str = "`setup` takes the path of an `async fn()` to await before the test's \
     transactions begin, e.g. `setup = crate::db::setup`";

/// The arguments of one `#[sqlx_atomic::test(..)]`, validated.
pub(crate) struct TestArgs {
    /// Every alias, in the order written, each once; `["default"]` when `using` is not given.
    aliases: Vec<LitStr>,
    /// `setup = path`: the function to await before the transactions begin.
    setup: Option<ExprPath>,
    /// `crate = "path"`, already parsed as a path.
    krate: Option<Path>,
}

/// The arguments `#[sqlx_atomic::test]` knows.
#[derive(Clone, Copy)]
enum Name {
    Using,
    Setup,
    Crate,
}

const TEST: Grammar<Name> = Grammar {
    attr: ATTR,
    expected: "`using`, `setup` or `crate`",
    name: |name| match name {
        "using" => Some(Name::Using),
        "setup" => Some(Name::Setup),
        "crate" => Some(Name::Crate),
        _ => None,
    },
    example: |name| match name {
        Name::Using => "using = \"default\"",
        Name::Setup => "setup = crate::db::setup",
        Name::Crate => "crate = \"::sqlx_atomic\"",
    },
};

/// Parses the attribute's argument tokens, reporting every mistake at once.
pub(crate) fn parse(args: TokenStream) -> syn::Result<TestArgs> {
    Parser::parse2(parse_args, args)
}

fn parse_args(input: ParseStream<'_>) -> syn::Result<TestArgs> {
    let mut given = AliasesAndCrate::default();
    let (mut setup, mut setup_given) = (None, false);
    parse_arguments(input, &TEST, |name, ident, value, errors| match name {
        Name::Using => given.using(value, errors),
        Name::Setup => {
            if std::mem::replace(&mut setup_given, true) {
                return errors.push(duplicate_argument(&ident));
            }
            match ungroup(value) {
                Expr::Path(path) if path.attrs.is_empty() => setup = Some(path),
                other => errors.push(syn::Error::new_spanned(other, NOT_A_PATH)),
            }
        }
        Name::Crate => given.krate(&ident, value, errors),
    })?;
    let (aliases, krate) = given.finish();
    Ok(TestArgs {
        aliases,
        setup,
        krate,
    })
}

/// What the expansion does with the function.
#[derive(Clone, Copy)]
enum Form {
    /// No other test attribute: make it a synchronous `#[test]` on the shared runtime.
    Replace,
    /// Another (async) test attribute runs it: only wrap the body.
    Compose,
}

/// Expands `#[sqlx_atomic::test(args)] item`. On any error, the output is the `compile_error!`s
/// followed by the item unchanged, so the rest of the crate still type-checks.
pub(crate) fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();

    let args = parse(args).map_err(|error| errors.push(error)).ok();
    let function = match syn::parse2::<FnItem>(item.clone()) {
        Ok(function) => Some(function),
        Err(_) => {
            errors.push(not_a_function(item.clone()));
            None
        }
    };
    let form = function
        .as_ref()
        .map(|function| check(function, &mut errors));

    match (args, function, form) {
        (Some(args), Some(function), Some(form)) if errors.is_empty() => {
            expand(args, function, form)
        }
        _ => errors.then_item(item),
    }
}

/// The error for an item that is not a function with a body. A method declared in a trait gets
/// its own message: the shared one advises the `impl` block, but a test takes no `self`.
fn not_a_function(item: TokenStream) -> syn::Error {
    match syn::parse2::<TraitItemFn>(item.clone()) {
        Ok(method) if method.default.is_none() => {
            let mut head = method.sig.fn_token.to_token_stream();
            head.extend(method.sig.ident.to_token_stream());
            syn::Error::new_spanned(head, NOT_A_FN_DECLARATION)
        }
        _ => item::not_a_function(item, NOT_A_FN, ATTR),
    }
}

/// Whether `attr` names a test attribute: a path whose last segment is `test`, in any form
/// (`#[test]`, `#[tokio::test]`, `#[tokio::test(flavor = "multi_thread")]`).
fn is_test_attribute(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "test")
}

/// Whether `attr` is the built-in `#[test]`, which cannot run an `async fn`: `#[test]`, or
/// `#[::core::prelude::v1::test]` and its `std`, unrooted and other-edition forms.
fn is_builtin_test(attr: &Attribute) -> bool {
    let Meta::Path(path) = &attr.meta else {
        return false;
    };
    let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match names.as_slice() {
        [test] => path.leading_colon.is_none() && test == "test",
        [krate, prelude, _, test] => {
            (krate == "core" || krate == "std") && prelude == "prelude" && test == "test"
        }
        _ => false,
    }
}

/// Checks the function and decides the form of the expansion.
fn check(function: &FnItem, errors: &mut Errors) -> Form {
    let sig = &function.sig;
    let test_attrs: Vec<&Attribute> = function
        .outer_attrs
        .iter()
        .filter(|attr| is_test_attribute(attr))
        .collect();
    item::reject_const_and_variadic(sig, ATTR, errors);
    if sig.asyncness.is_none() {
        // A synchronous function with a test attribute is most likely the output of an async test
        // attribute written above ours (tokio's adds `#[::core::prelude::v1::test]`).
        let message = if test_attrs.is_empty() {
            NOT_ASYNC
        } else {
            NOT_ASYNC_REWRITTEN
        };
        errors.push(syn::Error::new(sig.fn_token.span, message));
        return Form::Replace;
    }
    for attr in test_attrs.iter().filter(|attr| is_builtin_test(attr)) {
        errors.push(syn::Error::new_spanned(attr, BUILTIN_TEST));
    }
    if !test_attrs.is_empty() {
        // The other attribute decides what it accepts (tokio's rejects parameters itself).
        return Form::Compose;
    }
    if !sig.inputs.is_empty() {
        errors.push(syn::Error::new_spanned(&sig.inputs, PARAMETERS));
    }
    Form::Replace
}

fn expand(args: TestArgs, function: FnItem, form: Form) -> TokenStream {
    let FnItem {
        outer_attrs,
        vis,
        mut sig,
        brace,
        inner_attrs,
        body,
    } = function;
    // The runtime's calls here take any future: only the path itself can fail, where written.
    let krate = emit::crate_path(args.krate.as_ref(), None);
    let aliases = args.aliases;
    // Located at the user's path, so that a setup function of the wrong type is reported there
    // rather than on the whole attribute.
    let setup = args.setup.map(|path| {
        let at = path.span();
        let krate = emit::crate_path(args.krate.as_ref(), Some(at));
        quote_spanned! {at=>
            #krate::testing::__setup(#path).await;
        }
    });
    let body = emit::anchored_body(&sig, brace, body, Capture::Move);
    let run = quote! {
        #setup
        #krate::testing::__prepare(&[#(#aliases),*]);
        #krate::testing::rollback_after([#(#aliases),*], #body).await
    };

    match form {
        Form::Compose => {
            let mut tokens = quote!(#(#outer_attrs)* #vis #sig);
            brace.surround(&mut tokens, |tokens| {
                tokens.extend(quote! { #(#inner_attrs)* #run });
            });
            tokens
        }
        Form::Replace => {
            sig.asyncness = None;
            // The built-in attribute by its full path, as `#[tokio::test]` writes it, so that an
            // item named `test` in the user's scope cannot stand in for it.
            let test_attr = quote_spanned!(Span::call_site()=> #[::core::prelude::v1::test]);
            let mut tokens = quote!(#test_attr #(#outer_attrs)* #vis #sig);
            brace.surround(&mut tokens, |tokens| {
                tokens.extend(quote! {
                    #(#inner_attrs)*
                    #krate::testing::block_on(async move { #run })
                });
            });
            tokens
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{EMPTY_ALIAS, EMPTY_LIST, NOT_A_STRING};

    fn parsed(args: TokenStream) -> TestArgs {
        match parse(args.clone()) {
            Ok(parsed) => parsed,
            Err(error) => panic!("`{args}` should parse, got: {error}"),
        }
    }

    fn aliases(args: TokenStream) -> Vec<String> {
        parsed(args).aliases.iter().map(LitStr::value).collect()
    }

    fn errors(args: TokenStream) -> Vec<String> {
        crate::test_util::errors(parse, args)
    }

    #[test]
    fn arguments_in_every_form() {
        assert_eq!(aliases(quote!()), ["default"]);
        assert_eq!(aliases(quote!(using = "a")), ["a"]);
        assert_eq!(aliases(quote!(using = ["a", "b",])), ["a", "b"]);
        assert_eq!(
            aliases(quote!(using = "a", setup = s, using = ["b"])),
            ["a", "b"]
        );
        assert_eq!(aliases(quote!(crate = "x::y", setup = s)), ["default"]);
        let args = parsed(quote!(setup = crate::db::setup, crate = "my::sa"));
        let setup = args.setup.unwrap();
        assert_eq!(
            quote!(#setup).to_string(),
            quote!(crate::db::setup).to_string()
        );
        let krate = args.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), quote!(my::sa).to_string());
        // Generic and qualified paths are paths too.
        assert!(parsed(quote!(setup = db::setup::<Pg>)).setup.is_some());
        assert!(parsed(quote!(setup = <Db as Setup>::run)).setup.is_some());
    }

    #[test]
    fn argument_mistakes() {
        assert_eq!(
            errors(quote!(savepoint = false)),
            [
                "unknown argument `savepoint` to #[sqlx_atomic::test]; expected `using`, `setup` or `crate`"
            ]
        );
        assert_eq!(errors(quote!(using = "")), [EMPTY_ALIAS]);
        assert_eq!(errors(quote!(using = [])), [EMPTY_LIST]);
        assert_eq!(errors(quote!(using = ALIAS)), [NOT_A_STRING]);
        assert_eq!(
            errors(quote!(using = ["a", "a"])),
            ["duplicate alias \"a\""]
        );
        assert_eq!(
            errors(quote!(setup = a, setup = b)),
            ["duplicate argument `setup`"]
        );
        assert_eq!(
            errors(quote!(crate = "a", crate = "b")),
            ["duplicate argument `crate`"]
        );
        for not_a_path in [
            quote!(setup = "db::setup"),
            quote!(setup = setup()),
            quote!(setup = || async {}),
            quote!(setup = 1),
        ] {
            assert_eq!(errors(not_a_path.clone()), [NOT_A_PATH], "{not_a_path}");
        }
        assert_eq!(
            errors(quote!(foo, using = [], setup = "x", crate = 1)),
            [
                "unknown argument `foo` to #[sqlx_atomic::test]; expected `using`, `setup` or `crate`",
                EMPTY_LIST,
                NOT_A_PATH,
                "expected a string literal holding the path of the sqlx_atomic crate, e.g. crate = \
                 \"::sqlx_atomic\" or crate = \"my_app::sqlx_atomic\"",
            ]
        );
    }

    fn expanded(args: TokenStream, item: TokenStream) -> String {
        test(args, item).to_string()
    }

    #[test]
    fn alone_it_replaces_tokio_test() {
        let out = expanded(
            quote!(using = ["a", "b"], setup = db::setup),
            quote! {
                /// Docs.
                #[should_panic]
                async fn t() -> Result<(), E> {
                    #![allow(unused)]
                    run().await?;
                    Ok(())
                }
            },
        );
        let expected = quote! {
            #[::core::prelude::v1::test]
            /// Docs.
            #[should_panic]
            fn t() -> Result<(), E> {
                #![allow(unused)]
                ::sqlx_atomic::testing::block_on(async move {
                    ::sqlx_atomic::testing::__setup(db::setup).await;
                    ::sqlx_atomic::testing::__prepare(&["a", "b"]);
                    ::sqlx_atomic::testing::rollback_after(["a", "b"], async move {
                        if let ::core::option::Option::Some(__sqlx_atomic_ret) =
                            ::core::option::Option::None::<Result<(), E> >
                        {
                            return __sqlx_atomic_ret;
                        }
                        #[allow(clippy::diverging_sub_expression)]
                        let __sqlx_atomic_ret: Result<(), E> = {
                            run().await?;
                            Ok(())
                        };
                        #[allow(unreachable_code)]
                        __sqlx_atomic_ret
                    })
                    .await
                })
            }
        };
        assert_eq!(out, expected.to_string());
    }

    #[test]
    fn with_another_test_attribute_it_wraps_the_body() {
        for other in [
            quote!(#[tokio::test]),
            quote!(#[tokio::test(flavor = "multi_thread")]),
            quote!(#[::tokio::test]),
            quote!(#[actix_rt::test]),
        ] {
            let out = expanded(
                quote!(crate = "my::sa"),
                quote! {
                    #other
                    async fn t() {
                        body().await
                    }
                },
            );
            let expected = quote! {
                #other
                async fn t() {
                    my::sa::testing::__prepare(&["default"]);
                    my::sa::testing::rollback_after(["default"], async move {
                        if let ::core::option::Option::Some(__sqlx_atomic_ret) =
                            ::core::option::Option::None::<()>
                        {
                            return __sqlx_atomic_ret;
                        }
                        #[allow(clippy::diverging_sub_expression)]
                        let __sqlx_atomic_ret: () = {
                            body().await
                        };
                        #[allow(unreachable_code)]
                        __sqlx_atomic_ret
                    })
                    .await
                }
            };
            assert_eq!(out, expected.to_string(), "{other}");
        }
        // The other attribute decides about parameters.
        let out = expanded(
            quote!(),
            quote!(
                #[my::test]
                async fn t(x: u8) {}
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(!out.contains("block_on"), "{out}");
    }

    fn rejected(args: TokenStream, item: TokenStream) -> Vec<String> {
        crate::test_util::rejected(test, args, item)
    }

    #[test]
    fn rejects_what_is_not_an_async_test() {
        for item in [
            quote!(
                struct S;
            ),
            quote!(
                mod m {}
            ),
            quote!(impl S {}),
        ] {
            assert_eq!(rejected(quote!(), item.clone()), [NOT_A_FN], "{item}");
        }
        assert_eq!(
            rejected(
                quote!(),
                quote!(
                    fn t() {}
                )
            ),
            [NOT_ASYNC]
        );
        // What `#[tokio::test]` written above ours leaves.
        assert_eq!(
            rejected(
                quote!(),
                quote!(
                    #[::core::prelude::v1::test]
                    fn t() {
                        body()
                    }
                )
            ),
            [NOT_ASYNC_REWRITTEN]
        );
        assert_eq!(
            rejected(
                quote!(),
                quote!(
                    async fn t(x: u8, y: u8) {}
                )
            ),
            [PARAMETERS]
        );
        assert_eq!(
            rejected(
                quote!(),
                quote!(
                    async fn t(&self) {}
                )
            ),
            [PARAMETERS]
        );
        for builtin in [
            quote!(#[test]),
            quote!(#[core::prelude::v1::test]),
            quote!(#[::std::prelude::rust_2024::test]),
        ] {
            assert_eq!(
                rejected(quote!(), quote!(#builtin async fn t() {})),
                [BUILTIN_TEST],
                "{builtin}"
            );
        }
        assert_eq!(
            rejected(
                quote!(),
                quote!(
                    async fn t(&self);
                )
            ),
            [NOT_A_FN_DECLARATION]
        );
        assert_eq!(
            rejected(
                quote!(using = "", foo = 1),
                quote!(
                    const fn t(x: u8) {}
                )
            ),
            [
                EMPTY_ALIAS,
                "unknown argument `foo` to #[sqlx_atomic::test]; expected `using`, `setup` or `crate`",
                "#[sqlx_atomic::test] cannot be applied to a `const fn`",
                NOT_ASYNC,
            ]
        );
    }
}
