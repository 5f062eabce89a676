//! The function an attribute is applied to: parsed with its body kept as tokens, and the checks
//! and errors the three attributes share about it.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Item, Signature, TraitItemFn, Visibility, braced, token};

use crate::parse::Errors;

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

/// What none of the attributes accepts: a `const fn` or a variadic function.
pub(crate) fn reject_const_and_variadic(sig: &Signature, attr: &str, errors: &mut Errors) {
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new(
            constness.span,
            format!("{attr} cannot be applied to a `const fn`"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            format!("{attr} cannot be applied to a variadic function"),
        ));
    }
}
