//! What the three expansions share: the user's body as a future of the declared return type, and
//! the path of the `sqlx_atomic` crate their calls start with.

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Path, ReturnType, Signature, Token, Type, token};

/// The `sqlx_atomic` crate's path (`crate = ".."`, or `::sqlx_atomic`), each token keeping its own
/// hygiene and located at `errors_at`, or where the path is written (its string, or the attribute)
/// when `None`.
///
/// Why: a call's span starts at its path, so a call bounded on the user's types needs its path
/// where that error belongs, and any other call leaves it where rustc reports it not resolving.
pub(crate) fn crate_path(krate: Option<&Path>, errors_at: Option<Span>) -> TokenStream {
    let span = errors_at.unwrap_or_else(|| krate.map_or_else(Span::call_site, Spanned::span));
    match krate {
        Some(path) => relocate(path.to_token_stream(), span),
        None => quote_spanned!(span=> ::sqlx_atomic),
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

/// How the body's future holds the function's arguments.
#[derive(Clone, Copy)]
pub(crate) enum Capture {
    /// `async move`: the future owns them, as the function's own future does.
    Move,
    /// `async`: the future borrows them from the function's frame, so that a fresh future of the
    /// body can be made for each attempt.
    Borrow,
}

/// The user's body as an `async` block whose output is the function's declared return type.
///
/// The declared type is written twice, so that the body is checked against it as it would be
/// without the attribute: `?` and `.into()` convert to it, a `return` may coerce to it, and a
/// mismatch is reported in the user's code, with the user's types.
/// - A never-taken `return` of that type comes first: it fixes the block's output before the
///   body's own `return`s are checked (otherwise the first of them would decide it). Its variable
///   is located at the declared type, where rustc's "return type inferred to be .. here" points.
/// - A `let` of that type receives the user's block, with the user's braces, so that a body of
///   the wrong type is reported on the user's block.
///
/// `impl Trait`, which a `let` cannot name, and a bare `!`, unstable outside a return type, are
/// left to inference (`_`).
pub(crate) fn anchored_body(
    sig: &Signature,
    brace: token::Brace,
    body: TokenStream,
    capture: Capture,
) -> TokenStream {
    let capture = match capture {
        Capture::Move => Some(<Token![move]>::default()),
        Capture::Borrow => None,
    };
    let anchor_type = anchor_type(&sig.output);
    let mut user_block = Group::new(Delimiter::Brace, body);
    user_block.set_span(brace.span.join());
    let ret = Ident::new("__sqlx_atomic_ret", Span::mixed_site());
    let declared_at = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.paren_token.span.close(),
    };
    let declared_ret = Ident::new(
        "__sqlx_atomic_ret",
        Span::mixed_site().located_at(declared_at),
    );
    quote! {
        async #capture {
            if let ::core::option::Option::Some(#declared_ret) =
                ::core::option::Option::None::<#anchor_type>
            {
                return #declared_ret;
            }
            // A body that is only a `panic!` (a `#[should_panic]` test, a `todo!()` handler)
            // diverges inside the `let`: it is the user's whole body, not a sub-expression.
            #[allow(clippy::diverging_sub_expression)]
            let #ret: #anchor_type = #user_block;
            // Unreachable when the body always returns early (`return`, `?`, a panic).
            #[allow(unreachable_code)]
            #ret
        }
    }
}

/// Statements that move the function's arguments into locals of the user's block, and the
/// signature without the `mut` of the arguments they rebind (the locals carry it, with its span).
///
/// Why: the body runs in an `async move` block, so the arguments are that block's captures, not
/// its locals. A closure that borrows one, such as a hook that must be `'static`, would borrow the
/// block itself, a temporary of the macro's call, and rustc would report "temporary value dropped
/// while borrowed" on the attribute. Rebound as the user's own locals, with the user's names and
/// spans, they are reported as without the attribute: at the closure and the argument, "does not
/// live long enough". An `async fn` does the same with its arguments.
///
/// A binding by reference (`ref x`) is rebound too: the local is the reference. `self` is left
/// captured, since only a receiver can be named `self`: a closure that borrows a `self` taken by
/// value is still reported on the attribute.
pub(crate) fn rebind_arguments(sig: &Signature) -> (Signature, TokenStream) {
    let mut sig = sig.clone();
    let mut rebinds = TokenStream::new();
    for input in &mut sig.inputs {
        if let syn::FnArg::Typed(typed) = input {
            rebind_pattern(&mut typed.pat, &mut rebinds);
        }
    }
    (sig, rebinds)
}

/// Adds a rebinding for each binding by value in `pat`, moving its `mut` to the rebinding.
fn rebind_pattern(pat: &mut syn::Pat, rebinds: &mut TokenStream) {
    use syn::Pat;
    match pat {
        Pat::Ident(binding) => {
            if let Some((_, sub)) = &mut binding.subpat {
                rebind_pattern(sub, rebinds);
            }
            if binding.ident == "self" {
                return;
            }
            let ident = &binding.ident;
            // `ref mut x` binds a `&mut`, whose `mut` is not the binding's: it stays.
            let mutability = match binding.by_ref {
                Some(_) => None,
                None => binding.mutability.take(),
            };
            // `let x = x;` is what clippy calls a redundant local, and what a restriction lint
            // calls shadowing: here it is the point.
            rebinds.extend(quote! {
                #[allow(clippy::redundant_locals, clippy::shadow_same)]
                let #mutability #ident = #ident;
            });
        }
        Pat::Paren(paren) => rebind_pattern(&mut paren.pat, rebinds),
        Pat::Reference(reference) => rebind_pattern(&mut reference.pat, rebinds),
        Pat::Slice(slice) => slice
            .elems
            .iter_mut()
            .for_each(|elem| rebind_pattern(elem, rebinds)),
        Pat::Struct(strukt) => strukt
            .fields
            .iter_mut()
            .for_each(|field| rebind_pattern(&mut field.pat, rebinds)),
        Pat::Tuple(tuple) => tuple
            .elems
            .iter_mut()
            .for_each(|elem| rebind_pattern(elem, rebinds)),
        Pat::TupleStruct(tuple) => tuple
            .elems
            .iter_mut()
            .for_each(|elem| rebind_pattern(elem, rebinds)),
        Pat::Type(typed) => rebind_pattern(&mut typed.pat, rebinds),
        // No binding (`_`, literals, ranges, `..`), or none that a parameter can hold.
        _ => {}
    }
}

/// The type the body is checked against: the declared return type, `()` when there is none,
/// with `impl Trait` and a bare `!` left to inference.
fn anchor_type(output: &ReturnType) -> TokenStream {
    match output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => match &**ty {
            Type::Never(never) => quote_spanned!(never.bang_token.span=> _),
            ty => infer_impl_trait(ty).into_token_stream(),
        },
    }
}

/// Whether `ty` mentions `impl Trait`, which cannot be named in a `let` or a turbofish.
pub(crate) fn contains_impl_trait(ty: &Type) -> bool {
    let mut found = false;
    visit_types(&mut ty.clone(), &mut |ty| {
        found |= matches!(ty, Type::ImplTrait(_))
    });
    found
}

/// `ty` with every `impl Trait` replaced by `_`.
fn infer_impl_trait(ty: &Type) -> Type {
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
