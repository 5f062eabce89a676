//! `#[atomic]`: its checks of the function, and its expansion, which runs the body in the
//! runtime's block runner. The signature, attributes and body tokens are re-emitted unchanged,
//! with their spans. Its arguments are parsed in `args`.

pub(crate) mod args;
#[cfg(test)]
mod tests;

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::{ReturnType, Signature, Type};

use crate::emit::{self, Capture};
use crate::item::{self, FnItem};
use crate::parse::Errors;
use args::AtomicArgs;

const NOT_ASYNC_FN: &str = "#[atomic] can only be applied to an `async fn`";
const BAD_RETURN_TYPE: &str =
    "an #[atomic] function must return `Result<T, E>` where `E: From<sqlx_atomic::Error>`";

/// Expands `#[atomic(args)] item`. On any error, the output is the `compile_error!`s followed by
/// the item unchanged, so the rest of the crate still type-checks.
pub(crate) fn atomic(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = self::args::parse(args)
        .map_err(|error| errors.push(error))
        .ok();
    let function = match syn::parse2::<FnItem>(item.clone()) {
        Ok(function) => Some(function),
        Err(_) => {
            errors.push(item::not_a_function(
                item.clone(),
                NOT_ASYNC_FN,
                "#[atomic]",
            ));
            None
        }
    };
    let return_type = function
        .as_ref()
        .and_then(|function| check_signature(&function.sig, &mut errors));

    match (args, function, return_type) {
        (Some(args), Some(function), Some((return_type, anchor))) if errors.is_empty() => {
            wrap_body(args, function, &return_type, anchor)
        }
        _ => errors.then_item(item),
    }
}

/// Checks everything about the signature that `#[atomic]` relies on, and returns the declared
/// return type when it has the expected shape, with the span of its `Result`.
fn check_signature(sig: &Signature, errors: &mut Errors) -> Option<(Type, Span)> {
    item::reject_const_and_variadic(sig, "#[atomic]", errors);
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(sig.fn_token.span, NOT_ASYNC_FN));
    }
    match &sig.output {
        ReturnType::Type(_, ty) => match result_ident(ty) {
            Some(result) => Some(((**ty).clone(), result.span())),
            None => {
                errors.push(syn::Error::new_spanned(ty, BAD_RETURN_TYPE));
                None
            }
        },
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

/// Re-emits the function with its body wrapped in the runtime's block runner. `anchor` is the
/// span of the `Result` of the declared return type.
fn wrap_body(args: AtomicArgs, function: FnItem, return_type: &Type, anchor: Span) -> TokenStream {
    let FnItem {
        outer_attrs,
        vis,
        sig,
        brace,
        inner_attrs,
        body,
    } = function;

    // A return type whose error type lacks `From<sqlx_atomic::Error>` fails the bound of
    // `atomic_fn_returns_result` and the same bound of `Atomic::run`. Both calls are placed on the
    // anchor, so rustc reports the failure once, there, instead of a second time on the
    // `#[atomic]` attribute.
    let krate = emit::crate_path(args.krate.as_ref(), Some(anchor));
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

    // The check that the declared type, as written, is an `AtomicResult` (its error type converts
    // from `sqlx_atomic::Error`). `impl Trait` cannot be named in a turbofish; the bound of
    // `Atomic::run` still checks it.
    let assert_result = (!emit::contains_impl_trait(return_type)).then(|| {
        let checked = emit::relocate(return_type.to_token_stream(), anchor);
        quote_spanned! {anchor=>
            #krate::atomic_fn_returns_result::<#checked>();
        }
    });

    // Without `retry`, the body's future owns the arguments: they are rebound as its locals, so
    // that a borrow of one that outlives the body (a hook's) is reported where it is made.
    let (sig, rebinds) = match args.retry {
        None => emit::rebind_arguments(&sig),
        Some(_) => (sig, TokenStream::new()),
    };
    let mut tokens = quote!(#(#outer_attrs)* #vis #sig);
    brace.surround(&mut tokens, |tokens| {
        tokens.extend(quote! { #(#inner_attrs)* #assert_result });
        match args.retry {
            None => {
                let body = quote!(#rebinds #body);
                let run_future = emit::anchored_body(&sig, brace, body, Capture::Move);
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
                let attempt_future = emit::anchored_body(&sig, brace, body, Capture::Borrow);
                // Spanned at the anchor, not hygienic like the other locals: the bound of
                // `Attempts::attempt` is checked on the call, which starts at this receiver, and
                // only with the anchor's own span does a failure there merge with the one of
                // `atomic_fn_returns_result` instead of being reported a second time. The prefix
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
