//! Code generation of `#[atomic]`: checks the function, then wraps its body in the runtime's block
//! runner. The signature, attributes and body tokens are re-emitted unchanged, with their spans.

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Item, ReturnType, Signature, TraitItemFn, Type, Visibility, braced, token};

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
    let run_future = quote! {
        async move {
            let #ret: #anchor_type = #user_block;
            // Unreachable when the body always returns early (`return`, `?`, a panic).
            #[allow(unreachable_code)]
            #ret
        }
    };

    let mut tokens = quote!(#(#outer_attrs)* #vis #sig);
    brace.surround(&mut tokens, |tokens| {
        tokens.extend(quote! { #(#inner_attrs)* #assert_result });
        tokens.extend(quote_spanned! {anchor=>
            #krate::__private::Atomic::new() #using #savepoint #durable
                .run(#run_future)
                .await
        });
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
                "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable` or `crate`",
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
