//! Code generation of `#[atomic]`: checks the function, then wraps its body in the runtime's block
//! runner. The signature, attributes and body tokens are re-emitted unchanged, with their spans.

use proc_macro2::{Delimiter, Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, Item, ReturnType, Signature, Token, TraitItemFn, Type, Visibility, braced, token,
};

use crate::args::{self, AtomicArgs, Errors};

const NOT_ASYNC_FN: &str = "#[atomic] can only be applied to an `async fn`";
const BAD_RETURN_TYPE: &str =
    "an #[atomic] function must return `Result<T, E>` where `E: From<sqlx_atomic::Error>`";

/// Expands `#[atomic(args)] item`. On any error, the output is the `compile_error!`s followed by
/// the item unchanged, so the rest of the crate still type-checks.
pub(crate) fn atomic(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = args::parse(args).map_err(|error| errors.push(error)).ok();
    let function = match syn::parse2::<FnItem>(item.clone()) {
        Ok(function) => Some(function),
        Err(_) => {
            errors.push(not_a_function(item.clone(), NOT_ASYNC_FN, "#[atomic]"));
            None
        }
    };
    let return_type = function
        .as_ref()
        .and_then(|function| check_signature(&function.sig, &mut errors));

    match (args, function, return_type) {
        (Some(args), Some(function), Some(return_type)) if errors.is_empty() => {
            wrap_body(args, function, &return_type)
        }
        _ => errors.then_item(item),
    }
}

/// An fn item with a body, as found on a free function or a method in an `impl` or a `trait`.
/// The body is kept as tokens: it is re-emitted as written, and rustc, not syn, reports its
/// syntax errors.
pub(crate) struct FnItem {
    pub(crate) outer_attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) brace: token::Brace,
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) body: TokenStream,
}

impl Parse for FnItem {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let outer_attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let content;
        let brace = braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let body = content.parse()?;
        Ok(FnItem {
            outer_attrs,
            vis,
            sig,
            brace,
            inner_attrs,
            body,
        })
    }
}

/// The error for an item that is not a function with a body, spanned on its head (`struct Name`)
/// rather than on the whole item: `message`, or for a trait method without a body, an explanation
/// that `attr` needs the body.
pub(crate) fn not_a_function(item: TokenStream, message: &str, attr: &str) -> syn::Error {
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item,
        Err(_) => return syn::Error::new_spanned(item, message),
    };
    let (first, last): (&dyn ToTokens, &dyn ToTokens) = match &item {
        Item::Const(i) => (&i.const_token, &i.ident),
        Item::Enum(i) => (&i.enum_token, &i.ident),
        Item::ExternCrate(i) => (&i.extern_token, &i.ident),
        Item::Fn(i) => (&i.sig.fn_token, &i.sig.ident),
        Item::ForeignMod(i) => (&i.abi, &i.abi),
        Item::Impl(i) => (&i.impl_token, &i.self_ty),
        Item::Macro(i) => (&i.mac.path, &i.mac.bang_token),
        Item::Mod(i) => (&i.mod_token, &i.ident),
        Item::Static(i) => (&i.static_token, &i.ident),
        Item::Struct(i) => (&i.struct_token, &i.ident),
        Item::Trait(i) => (&i.trait_token, &i.ident),
        Item::TraitAlias(i) => (&i.trait_token, &i.ident),
        Item::Type(i) => (&i.type_token, &i.ident),
        Item::Union(i) => (&i.union_token, &i.ident),
        Item::Use(i) => (&i.use_token, &i.tree),
        Item::Verbatim(tokens) => {
            // A method declared in a trait without a default body.
            if let Ok(method) = syn::parse2::<TraitItemFn>(tokens.clone()) {
                let mut head = method.sig.fn_token.to_token_stream();
                head.extend(method.sig.ident.to_token_stream());
                return syn::Error::new_spanned(
                    head,
                    format!(
                        "{attr} needs a function body: put it on the method in the `impl` block, \
                         not on the trait's declaration"
                    ),
                );
            }
            return syn::Error::new_spanned(tokens, message);
        }
        other => return syn::Error::new_spanned(other, message),
    };
    let mut head = first.to_token_stream();
    head.extend(last.to_token_stream());
    syn::Error::new_spanned(head, message)
}

/// Checks everything about the signature that `#[atomic]` relies on, and returns the declared
/// return type when it has the expected shape.
fn check_signature(sig: &Signature, errors: &mut Errors) -> Option<Type> {
    args::reject_const_and_variadic(sig, "#[atomic]", errors);
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(sig.fn_token.span, NOT_ASYNC_FN));
    }
    match &sig.output {
        ReturnType::Type(_, ty) if result_ident(ty).is_some() => Some((**ty).clone()),
        ReturnType::Type(_, ty) => {
            errors.push(syn::Error::new_spanned(ty, BAD_RETURN_TYPE));
            None
        }
        ReturnType::Default => {
            // No return type to point at: underline `name(..)`, where it would go.
            let mut head = sig.ident.to_token_stream();
            head.extend([Ident::new("close_paren", sig.paren_token.span.close())]);
            errors.push(syn::Error::new_spanned(head, BAD_RETURN_TYPE));
            None
        }
    }
}

/// The syntactic rule for the return type: a path whose last segment is `Result`. Whether its
/// error type converts from `sqlx_atomic::Error` is left to the type check of the expansion.
/// Returns that last segment's name.
fn result_ident(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Group(group) => result_ident(&group.elem),
        Type::Paren(paren) => result_ident(&paren.elem),
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .map(|segment| &segment.ident)
            .filter(|ident| *ident == "Result"),
        _ => None,
    }
}

/// Whether `ty` mentions `impl Trait`, which cannot be named in a `let` or a turbofish.
fn contains_impl_trait(ty: &Type) -> bool {
    let mut found = false;
    visit_types(&mut ty.clone(), &mut |ty| {
        found |= matches!(ty, Type::ImplTrait(_))
    });
    found
}

/// `ty` with every `impl Trait` replaced by `_`.
pub(crate) fn infer_impl_trait(ty: &Type) -> Type {
    let mut ty = ty.clone();
    visit_types(&mut ty, &mut |ty| {
        if let Type::ImplTrait(impl_trait) = ty {
            *ty = Type::Infer(syn::TypeInfer {
                underscore_token: syn::Token![_](impl_trait.impl_token.span),
            });
        }
    });
    ty
}

/// Calls `f` on `ty` and on every type nested in it that a return type can contain.
fn visit_types(ty: &mut Type, f: &mut dyn FnMut(&mut Type)) {
    f(ty);
    match ty {
        Type::Array(array) => visit_types(&mut array.elem, f),
        Type::Group(group) => visit_types(&mut group.elem, f),
        Type::Paren(paren) => visit_types(&mut paren.elem, f),
        Type::Ptr(ptr) => visit_types(&mut ptr.elem, f),
        Type::Reference(reference) => visit_types(&mut reference.elem, f),
        Type::Slice(slice) => visit_types(&mut slice.elem, f),
        Type::Tuple(tuple) => tuple.elems.iter_mut().for_each(|elem| visit_types(elem, f)),
        Type::Path(path) => {
            for segment in &mut path.path.segments {
                if let syn::PathArguments::AngleBracketed(generics) = &mut segment.arguments {
                    for arg in &mut generics.args {
                        match arg {
                            syn::GenericArgument::Type(ty) => visit_types(ty, f),
                            syn::GenericArgument::AssocType(assoc) => visit_types(&mut assoc.ty, f),
                            _ => {}
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// `tokens` with every token moved to `location`, each keeping its own hygiene.
pub(crate) fn relocate(tokens: TokenStream, location: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut moved = Group::new(group.delimiter(), relocate(group.stream(), location));
                moved.set_span(group.span().located_at(location));
                return TokenTree::Group(moved);
            }
            token.set_span(token.span().located_at(location));
            token
        })
        .collect()
}

/// Re-emits the function with its body wrapped in the runtime's block runner.
fn wrap_body(args: AtomicArgs, function: FnItem, return_type: &Type) -> TokenStream {
    let FnItem {
        outer_attrs,
        vis,
        sig,
        brace,
        inner_attrs,
        body,
    } = function;

    // A return type whose error type lacks `From<sqlx_atomic::Error>` fails the bound of
    // `assert_atomic_result` and the same bound of `Atomic::run`. Both calls are placed on the
    // `Result` of the declared return type, so rustc reports the failure once, there, instead of a
    // second time on the `#[atomic]` attribute.
    let anchor = result_ident(return_type).map_or_else(Span::call_site, Ident::span);
    let krate = match args.krate {
        Some(path) => relocate(path.into_token_stream(), anchor),
        None => quote_spanned!(anchor=> ::sqlx_atomic),
    };
    let using = args
        .using
        .map(|alias| quote_spanned!(anchor=> .using(#alias)));
    let savepoint = args
        .savepoint
        .map(|savepoint| quote_spanned!(anchor=> .savepoint(#savepoint)));
    let durable = args
        .durable
        .map(|durable| quote_spanned!(anchor=> .durable(#durable)));
    let isolation = args.isolation.map(|variant| {
        let variant = Ident::new(variant, anchor);
        quote_spanned!(anchor=> .isolation(#krate::Isolation::#variant))
    });
    let read_only = args
        .read_only
        .map(|read_only| quote_spanned!(anchor=> .read_only(#read_only)));
    let lock = args.lock.map(|variant| {
        let variant = Ident::new(variant, anchor);
        quote_spanned!(anchor=> .lock(#krate::LockMode::#variant))
    });
    let timeout = args.timeout.map(|millis| {
        let mut millis = Literal::u64_unsuffixed(millis);
        millis.set_span(anchor);
        quote_spanned!(anchor=> .timeout(::core::time::Duration::from_millis(#millis)))
    });
    let builder = quote_spanned! {anchor=>
        #krate::__private::Atomic::new() #using #savepoint #durable #isolation #read_only #lock #timeout
    };

    // `impl Trait` cannot be named in a turbofish; the bound of `Atomic::run` still checks it.
    let assert_result = (!contains_impl_trait(return_type)).then(|| {
        let checked = relocate(return_type.to_token_stream(), anchor);
        quote_spanned! {anchor=>
            #krate::__private::assert_atomic_result::<#checked>();
        }
    });
    // The declared type, so that the body is checked against it and a mismatch is reported in the
    // user's code, with the user's types. `impl Trait` becomes `_`, which a `let` accepts.
    let anchor_type = infer_impl_trait(return_type);
    // The user's braces, so that a body of the wrong type is reported on the user's block.
    let mut user_block = Group::new(Delimiter::Brace, body);
    user_block.set_span(brace.span.join());
    let ret = Ident::new("__sqlx_atomic_ret", Span::mixed_site());
    let body_future = |capture: Option<Token![move]>| {
        quote! {
            async #capture {
                let #ret: #anchor_type = #user_block;
                // Unreachable when the body always returns early (`return`, `?`, a panic).
                #[allow(unreachable_code)]
                #ret
            }
        }
    };

    let mut tokens = quote!(#(#outer_attrs)* #vis #sig);
    brace.surround(&mut tokens, |tokens| {
        tokens.extend(quote! { #(#inner_attrs)* #assert_result });
        match args.retry {
            None => {
                let run_future = body_future(Some(<Token![move]>::default()));
                tokens.extend(quote_spanned! {anchor=>
                    #builder
                        .run(#run_future)
                        .await
                });
            }
            // Each attempt needs a fresh future of the body, so the body cannot move the
            // function's arguments into an `async move`: it borrows them from the function's own
            // frame instead, and a body that consumes an argument fails to compile with rustc's
            // "value moved here, in previous iteration of loop".
            Some(retry) => {
                let attempt_future = body_future(None);
                // Spanned at the anchor, not hygienic like the other locals: the bound of
                // `Attempts::attempt` is checked on the call, which starts at this receiver, and
                // only with the anchor's own span does a failure there merge with the one of
                // `assert_atomic_result` instead of being reported a second time. The prefix
                // keeps it apart from the user's names.
                let attempts = Ident::new("__sqlx_atomic_attempts", anchor);
                let out = Ident::new("__sqlx_atomic_out", Span::mixed_site());
                tokens.extend(quote_spanned! {anchor=>
                    let mut #attempts = #builder
                        .retry(#retry)
                        .__attempts();
                    loop {
                        if let ::core::ops::ControlFlow::Break(#out) = #attempts
                            .attempt(#attempt_future)
                            .await
                        {
                            break #out;
                        }
                    }
                });
            }
        }
    });
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        atomic(args, item).to_string()
    }

    #[test]
    fn wraps_the_body_and_keeps_the_signature() {
        let out = expand(
            quote!(using = "x", savepoint = false),
            quote! {
                /// Docs.
                #[inline]
                pub async fn f<'a, T: Send>(&mut self, a: &'a T) -> Result<U, E>
                where
                    T: Sync,
                {
                    #![allow(unused)]
                    body(a)?;
                    Ok(u)
                }
            },
        );
        let expected = quote! {
            /// Docs.
            #[inline]
            pub async fn f<'a, T: Send>(&mut self, a: &'a T) -> Result<U, E>
            where
                T: Sync,
            {
                #![allow(unused)]
                ::sqlx_atomic::__private::assert_atomic_result::<Result<U, E> >();
                ::sqlx_atomic::__private::Atomic::new()
                    .using("x")
                    .savepoint(false)
                    .run(async move {
                        let __sqlx_atomic_ret: Result<U, E> = {
                            body(a)?;
                            Ok(u)
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
    fn only_given_arguments_become_builder_calls() {
        let out = expand(
            quote!(),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains(":: sqlx_atomic :: __private :: Atomic :: new () . run ("),
            "{out}"
        );
        let out = expand(
            quote!(durable = true, crate = "my::sa"),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains("my :: sa :: __private :: Atomic :: new () . durable (true) . run ("),
            "{out}"
        );
        assert!(
            out.contains("my :: sa :: __private :: assert_atomic_result"),
            "{out}"
        );
    }

    #[test]
    fn each_option_becomes_its_builder_call() {
        for (args, call) in [
            (
                quote!(isolation = "read_uncommitted"),
                quote!(.isolation(::sqlx_atomic::Isolation::ReadUncommitted)),
            ),
            (
                quote!(isolation = "read_committed"),
                quote!(.isolation(::sqlx_atomic::Isolation::ReadCommitted)),
            ),
            (
                quote!(isolation = "repeatable_read"),
                quote!(.isolation(::sqlx_atomic::Isolation::RepeatableRead)),
            ),
            (
                quote!(isolation = "serializable"),
                quote!(.isolation(::sqlx_atomic::Isolation::Serializable)),
            ),
            (quote!(read_only = true), quote!(.read_only(true))),
            (quote!(read_only = false), quote!(.read_only(false))),
            (
                quote!(lock = "deferred"),
                quote!(.lock(::sqlx_atomic::LockMode::Deferred)),
            ),
            (
                quote!(lock = "immediate"),
                quote!(.lock(::sqlx_atomic::LockMode::Immediate)),
            ),
            (
                quote!(lock = "exclusive"),
                quote!(.lock(::sqlx_atomic::LockMode::Exclusive)),
            ),
            (
                quote!(timeout = "500ms"),
                quote!(.timeout(::core::time::Duration::from_millis(500))),
            ),
            (
                quote!(timeout = "5s"),
                quote!(.timeout(::core::time::Duration::from_millis(5000))),
            ),
            (
                quote!(timeout = "2m"),
                quote!(.timeout(::core::time::Duration::from_millis(120000))),
            ),
        ] {
            let out = expand(
                args.clone(),
                quote!(
                    async fn f() -> Result<(), E> {
                        Ok(())
                    }
                ),
            );
            let expected = quote!(::sqlx_atomic::__private::Atomic::new() #call .run);
            assert!(
                out.contains(&format!("{expected} (async move {{")),
                "{args}: {out}"
            );
        }
    }

    #[test]
    fn options_follow_the_crate_path_and_keep_their_order() {
        let out = expand(
            quote!(
                timeout = "1s",
                lock = "immediate",
                read_only = false,
                isolation = "serializable",
                durable = true,
                savepoint = true,
                using = "x",
                crate = "my::sa",
            ),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        let expected = quote!(
            my::sa::__private::Atomic::new()
                .using("x")
                .savepoint(true)
                .durable(true)
                .isolation(my::sa::Isolation::Serializable)
                .read_only(false)
                .lock(my::sa::LockMode::Immediate)
                .timeout(::core::time::Duration::from_millis(1000))
                .run
        );
        assert!(out.contains(&format!("{expected} (async move {{")), "{out}");
    }

    #[test]
    fn retry_runs_a_borrowing_body_in_a_loop() {
        let out = expand(
            quote!(retry = 3, isolation = "serializable", using = "x"),
            quote! {
                pub async fn f(&mut self, name: &str, n: String) -> Result<U, E> {
                    #![allow(unused)]
                    body(self, name, &n)?;
                    Ok(u)
                }
            },
        );
        let expected = quote! {
            pub async fn f(&mut self, name: &str, n: String) -> Result<U, E> {
                #![allow(unused)]
                ::sqlx_atomic::__private::assert_atomic_result::<Result<U, E> >();
                let mut __sqlx_atomic_attempts = ::sqlx_atomic::__private::Atomic::new()
                    .using("x")
                    .isolation(::sqlx_atomic::Isolation::Serializable)
                    .retry(3u32)
                    .__attempts();
                loop {
                    if let ::core::ops::ControlFlow::Break(__sqlx_atomic_out) = __sqlx_atomic_attempts
                        .attempt(async {
                            let __sqlx_atomic_ret: Result<U, E> = {
                                body(self, name, &n)?;
                                Ok(u)
                            };
                            #[allow(unreachable_code)]
                            __sqlx_atomic_ret
                        })
                        .await
                    {
                        break __sqlx_atomic_out;
                    }
                }
            }
        };
        assert_eq!(out, expected.to_string());
        assert!(out.contains("__attempts ()"), "{out}");
        assert!(out.contains("loop"), "{out}");
        assert!(!out.contains("async move"), "{out}");
        assert!(!out.contains(". run ("), "{out}");
    }

    #[test]
    fn retry_passes_an_expression_through() {
        let out = expand(
            quote!(retry = Retry::new(5).backoff(a, b), savepoint = true),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        let expected = quote!(
            ::sqlx_atomic::__private::Atomic::new()
                .savepoint(true)
                .retry(Retry::new(5).backoff(a, b))
                .__attempts();
        );
        assert!(out.contains(&expected.to_string()), "{out}");
    }

    #[test]
    fn retry_keeps_the_inferred_impl_trait_anchor() {
        let out = expand(
            quote!(retry = 1),
            quote!(
                async fn f() -> Result<impl Display, E> {
                    Ok(1)
                }
            ),
        );
        assert!(!out.contains("assert_atomic_result"), "{out}");
        assert!(
            out.contains("async { let __sqlx_atomic_ret : Result < _ , E >"),
            "{out}"
        );
    }

    #[test]
    fn reports_option_errors_with_the_function_unchanged() {
        let item = quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        );
        for (args, message) in [
            (
                quote!(isolation = "snapshot"),
                "unknown isolation level \"snapshot\"; expected \"read_uncommitted\", \
                 \"read_committed\", \"repeatable_read\" or \"serializable\"",
            ),
            (
                quote!(lock = "shared"),
                "unknown lock mode \"shared\"; expected \"deferred\", \"immediate\" or \
                 \"exclusive\"",
            ),
            (quote!(timeout = "5h"), args::TIMEOUT_FORM),
            (quote!(timeout = "0s"), args::TIMEOUT_ZERO),
            (quote!(retry = 0), args::RETRY_ZERO),
            (
                quote!(retry = 2, savepoint = false),
                args::RETRY_WITH_SAVEPOINT_FALSE,
            ),
            (
                quote!(read_only = 1),
                "expected `true` or `false` for `read_only`",
            ),
        ] {
            assert_eq!(rejected(args.clone(), item.clone()), [message], "{args}");
        }
    }

    #[test]
    fn methods_inside_impl_blocks_parse() {
        // What the attribute receives for a method: an fn with a receiver and no `pub`.
        for item in [
            quote!(
                async fn m(&self) -> Result<(), E> {
                    Ok(())
                }
            ),
            quote!(
                async fn m(&mut self) -> Result<(), E> {
                    Ok(())
                }
            ),
            quote!(
                async fn m(self) -> Result<(), E> {
                    Ok(())
                }
            ),
            quote!(
                async fn m(mut self: Box<Self>) -> Result<(), E> {
                    Ok(())
                }
            ),
            quote!(
                pub(crate) async fn m(self, x: impl Into<u8>) -> io::Result<()> {
                    Ok(())
                }
            ),
        ] {
            let out = expand(quote!(), item.clone());
            assert!(!out.contains("compile_error"), "{item}: {out}");
            assert!(out.contains("__sqlx_atomic_ret"), "{item}: {out}");
        }
    }

    #[test]
    fn impl_trait_in_the_result_is_inferred() {
        let out = expand(
            quote!(),
            quote!(
                async fn f() -> Result<impl Display, E> {
                    Ok(1)
                }
            ),
        );
        assert!(!out.contains("assert_atomic_result"), "{out}");
        assert!(
            out.contains("let __sqlx_atomic_ret : Result < _ , E >"),
            "{out}"
        );
    }

    fn rejected(args: TokenStream, item: TokenStream) -> Vec<String> {
        crate::test_util::rejected(atomic, args, item)
    }

    #[test]
    fn rejects_what_is_not_an_async_fn_returning_result() {
        let cases = [
            (
                quote!(
                    fn f() -> Result<(), E> {
                        Ok(())
                    }
                ),
                NOT_ASYNC_FN,
            ),
            (
                quote!(
                    struct S;
                ),
                NOT_ASYNC_FN,
            ),
            (
                quote!(
                    const C: u8 = 1;
                ),
                NOT_ASYNC_FN,
            ),
            (
                quote!(
                    mod m {}
                ),
                NOT_ASYNC_FN,
            ),
            (quote!(impl S {}), NOT_ASYNC_FN),
            (
                quote!(
                    async fn f() {}
                ),
                BAD_RETURN_TYPE,
            ),
            (
                quote!(
                    async fn f() -> Option<i32> {
                        None
                    }
                ),
                BAD_RETURN_TYPE,
            ),
            (
                quote!(
                    async fn f() -> () {}
                ),
                BAD_RETURN_TYPE,
            ),
            (
                quote!(
                    async fn f() -> impl Future<Output = Result<(), E>> {
                        x
                    }
                ),
                BAD_RETURN_TYPE,
            ),
            (
                quote!(
                    async fn f() -> <T as Tr>::Result {
                        x
                    }
                ),
                BAD_RETURN_TYPE,
            ),
            (
                quote!(
                    async fn f() -> &Result<(), E> {
                        x
                    }
                ),
                BAD_RETURN_TYPE,
            ),
        ];
        for (item, message) in cases {
            assert_eq!(rejected(quote!(), item.clone()), [message], "{item}");
        }
    }

    #[test]
    fn reports_argument_and_function_errors_together() {
        let messages = rejected(
            quote!(foo = 1, using = ""),
            quote!(
                const fn f() -> u8 {
                    1
                }
            ),
        );
        assert_eq!(
            messages,
            [
                "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable`, `isolation`, `read_only`, `lock`, `timeout`, `retry` or `crate`",
                "the database alias cannot be empty",
                "#[atomic] cannot be applied to a `const fn`",
                NOT_ASYNC_FN,
                BAD_RETURN_TYPE,
            ]
        );
    }

    #[test]
    fn trait_declarations_need_a_body() {
        let messages = rejected(
            quote!(),
            quote!(
                async fn f(&self) -> Result<(), E>;
            ),
        );
        assert_eq!(messages.len(), 1);
        assert!(
            messages[0].starts_with("#[atomic] needs a function body"),
            "{}",
            messages[0]
        );
    }

    #[test]
    fn accepted_result_paths() {
        for ty in [
            quote!(Result<T, E>),
            quote!(std::result::Result<T, E>),
            quote!(::core::result::Result<T, E>),
            quote!(anyhow::Result<T>),
            quote!(io::Result<()>),
            quote!((Result<T, E>)),
        ] {
            let ty: Type = syn::parse2(ty.clone()).unwrap();
            assert!(result_ident(&ty).is_some(), "{}", ty.to_token_stream());
        }
    }
}
