//! The argument grammar that `#[atomic]`, `#[non_atomic_requests]` and `#[sqlx_atomic::test]`
//! share: a comma-separated list of `name = value`, the kinds of value (alias lists, the crate
//! path, booleans, a choice among strings), and the gathering of errors.
//!
//! The parser never stops at the first mistake: a malformed argument is skipped up to the next
//! comma and the rest are still checked, so one compile reports every mistake in the attribute.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::{Expr, Ident, Lit, LitBool, LitStr, Path, Token};

/// The argument names of one attribute, and what to say about them.
pub(crate) struct Grammar<N> {
    /// The attribute, as written in messages: `#[atomic]`.
    pub(crate) attr: &'static str,
    /// Every argument name, as written in messages: "`using` or `crate`".
    pub(crate) expected: &'static str,
    /// The argument called `name` (unraw), if the attribute knows it.
    pub(crate) name: fn(&str) -> Option<N>,
    /// An example of the argument, for the messages about a missing `=` or value.
    pub(crate) example: fn(N) -> &'static str,
}

/// Gathers errors so they can be reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn into_result(self) -> syn::Result<()> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// What an attribute that found mistakes expands to: the `compile_error!`s, then the item
    /// unchanged, so that the rest of the crate still type-checks. A variadic function is left
    /// out: it cannot compile (an `async fn` cannot be C-variadic), and rustc's own errors about
    /// it would only bury the attribute's message.
    pub(crate) fn then_item(self, item: TokenStream) -> TokenStream {
        let mut tokens = self
            .0
            .map(syn::Error::into_compile_error)
            .unwrap_or_default();
        let variadic = matches!(
            syn::parse2::<syn::Item>(item.clone()),
            Ok(syn::Item::Fn(function)) if function.sig.variadic.is_some()
        );
        if !variadic {
            tokens.extend(item);
        }
        tokens
    }
}

/// Parses a comma-separated list of `name = value` arguments, handing each well-formed argument
/// with a known name to `store`, which reports its own mistakes to the `Errors` it is given. Every
/// mistake of the whole list is returned at once.
pub(crate) fn parse_arguments<N: Copy>(
    input: ParseStream<'_>,
    grammar: &Grammar<N>,
    mut store: impl FnMut(N, Ident, Expr, &mut Errors),
) -> syn::Result<()> {
    let mut errors = Errors::default();
    while !input.is_empty() {
        match parse_one(input, grammar, &mut errors) {
            Ok(Some((name, ident, value))) => store(name, ident, value, &mut errors),
            Ok(None) => {}
            Err(error) => {
                errors.push(error);
                // Resynchronise on the next comma so the remaining arguments are still checked.
                skip_to_comma(input)?;
            }
        }
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
        }
    }
    errors.into_result()
}

fn skip_to_comma(input: ParseStream<'_>) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

/// Parses one `name = value`. Returns `Err` for a syntax error (the caller skips to the next
/// comma), `Ok(None)` for an unknown name (reported to `errors`, its value skipped).
fn parse_one<N: Copy>(
    input: ParseStream<'_>,
    grammar: &Grammar<N>,
    errors: &mut Errors,
) -> syn::Result<Option<(N, Ident, Expr)>> {
    let Grammar {
        attr,
        expected,
        name,
        example,
    } = grammar;
    if !input.peek(Ident::peek_any) {
        return Err(input.error(format!("expected an argument of {attr}: {expected}")));
    }
    let ident = input.call(Ident::parse_any)?;
    let Some(name) = name(&ident.unraw().to_string()) else {
        errors.push(syn::Error::new(
            ident.span(),
            format!("unknown argument `{ident}` to {attr}; expected {expected}"),
        ));
        // An unknown argument's value is not checked; skipping it also covers a bare `foo`.
        skip_to_comma(input)?;
        return Ok(None);
    };
    if !input.peek(Token![=]) {
        let span = if input.is_empty() || input.peek(Token![,]) {
            ident.span()
        } else {
            input.span()
        };
        return Err(syn::Error::new(
            span,
            format!("expected `=` after `{ident}`, e.g. `{}`", example(name)),
        ));
    }
    let eq: Token![=] = input.parse()?;
    if input.is_empty() || input.peek(Token![,]) {
        return Err(syn::Error::new(
            eq.span,
            format!(
                "expected a value after `{ident} =`, e.g. `{}`",
                example(name)
            ),
        ));
    }
    let value: Expr = input.parse()?;
    if !input.is_empty() && !input.peek(Token![,]) {
        return Err(input.error(format!("expected `,` between the arguments of {attr}")));
    }
    Ok(Some((name, ident, value)))
}

/// `using = ..` (repeatable, each a literal or a list) and `crate = ..`, as
/// `#[non_atomic_requests]` and `#[sqlx_atomic::test]` take them.
#[derive(Default)]
pub(crate) struct AliasesAndCrate {
    aliases: Vec<LitStr>,
    using_given: bool,
    krate: Option<Path>,
    crate_given: bool,
}

impl AliasesAndCrate {
    /// One `using = value`.
    pub(crate) fn using(&mut self, value: Expr, errors: &mut Errors) {
        self.using_given = true;
        alias_list(value, &mut self.aliases, errors);
    }

    /// One `crate = value`; a second one is a mistake.
    pub(crate) fn krate(&mut self, ident: &Ident, value: Expr, errors: &mut Errors) {
        if std::mem::replace(&mut self.crate_given, true) {
            return errors.push(duplicate_argument(ident));
        }
        match crate_path_value(value) {
            Ok(path) => self.krate = Some(path),
            Err(error) => errors.push(error),
        }
    }

    /// The aliases in the order written (`["default"]` when `using` was not given), and the
    /// crate path.
    pub(crate) fn finish(mut self) -> (Vec<LitStr>, Option<Path>) {
        if !self.using_given {
            self.aliases.push(LitStr::new("default", Span::call_site()));
        }
        (self.aliases, self.krate)
    }
}

/// The error for a second `name = ..` of an argument that can be given once.
pub(crate) fn duplicate_argument(ident: &Ident) -> syn::Error {
    syn::Error::new(ident.span(), format!("duplicate argument `{ident}`"))
}

/// Removes the invisible groups a `macro_rules!` fragment (`$v:expr`) wraps around a value.
pub(crate) fn ungroup(mut value: Expr) -> Expr {
    while let Expr::Group(group) = value {
        value = *group.expr;
    }
    value
}

pub(crate) const NOT_A_STRING: &str = "aliases must be string literals, e.g. `using = \"reports\"` \
                                       or `using = [\"reports\", \"audit\"]`";
pub(crate) const EMPTY_LIST: &str = "the list of aliases is empty: name at least one, e.g. \
                                     `using = [\"reports\"]`, or leave `using` out for the \
                                     \"default\" alias";
pub(crate) const EMPTY_ALIAS: &str = "the database alias cannot be empty";

/// Appends the aliases of one `using = ..` of an attribute that takes several, a literal or a list
/// of them, to `aliases`, reporting empty lists, non-literals, empty and repeated aliases.
fn alias_list(value: Expr, aliases: &mut Vec<LitStr>, errors: &mut Errors) {
    match ungroup(value) {
        Expr::Array(list) => {
            if list.elems.is_empty() {
                let brackets = list.bracket_token.span.join();
                errors.push(syn::Error::new(brackets, EMPTY_LIST));
            }
            for alias in list.elems {
                add_alias(alias, aliases, errors);
            }
        }
        alias => add_alias(alias, aliases, errors),
    }
}

/// Checks one alias of a list and appends it to `aliases`.
fn add_alias(value: Expr, aliases: &mut Vec<LitStr>, errors: &mut Errors) {
    let lit = match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit,
        other => return errors.push(syn::Error::new_spanned(other, NOT_A_STRING)),
    };
    let name = lit.value();
    if name.is_empty() {
        errors.push(syn::Error::new(lit.span(), EMPTY_ALIAS));
    } else if aliases.iter().any(|seen| seen.value() == name) {
        errors.push(syn::Error::new(
            lit.span(),
            format!("duplicate alias {name:?}"),
        ));
    } else {
        aliases.push(lit);
    }
}

/// `name = true | false`.
pub(crate) fn boolean(value: Expr, name: &str) -> syn::Result<LitBool> {
    match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Bool(lit),
            ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected `true` or `false` for `{name}`"),
        )),
    }
}

/// `"a", "b" or "c"`: the accepted strings of a [`choice`], for its messages.
fn quoted_list(choices: &[(&str, &str)]) -> String {
    let quoted: Vec<String> = choices
        .iter()
        .map(|(text, _)| format!("{text:?}"))
        .collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A string literal naming one of `choices` (`(as written, variant)`); returns the variant.
/// `name` is the argument, `what` what its strings name ("isolation level").
pub(crate) fn choice(
    value: Expr,
    name: &str,
    what: &str,
    choices: &[(&str, &'static str)],
) -> syn::Result<&'static str> {
    let lit = match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit,
        other => {
            return Err(syn::Error::new_spanned(
                other,
                format!("expected {} for `{name}`", quoted_list(choices)),
            ));
        }
    };
    let text = lit.value();
    choices
        .iter()
        .find(|(written, _)| *written == text)
        .map(|(_, variant)| *variant)
        .ok_or_else(|| {
            syn::Error::new(
                lit.span(),
                format!("unknown {what} {text:?}; expected {}", quoted_list(choices)),
            )
        })
}

/// `crate = "path"`: the path the string holds, with the string's span.
pub(crate) fn crate_path_value(value: Expr) -> syn::Result<Path> {
    const MESSAGE: &str = "expected a string literal holding the path of the sqlx_atomic crate, \
                           e.g. crate = \"::sqlx_atomic\" or crate = \"my_app::sqlx_atomic\"";
    match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit
            .parse_with(Path::parse_mod_style)
            .map_err(|_| syn::Error::new(lit.span(), MESSAGE)),
        other => Err(syn::Error::new_spanned(other, MESSAGE)),
    }
}

#[cfg(test)]
mod tests {
    //! The grammar is tested through `#[atomic]`'s, which has an argument of every kind.
    use quote::quote;

    use super::*;
    use crate::atomic::args::{AtomicArgs, parse};

    fn ok(args: TokenStream) -> AtomicArgs {
        crate::test_util::parsed(parse, args)
    }

    fn errors(args: TokenStream) -> Vec<String> {
        crate::test_util::errors(parse, args)
    }

    fn errors_str(args: &str) -> Vec<String> {
        crate::test_util::errors_str(parse, args)
    }

    #[test]
    fn a_variadic_function_is_not_emitted_again() {
        let out = crate::atomic::atomic(
            quote!(),
            quote!(
                async unsafe extern "C" fn f(n: i32, rest: ...) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .to_string();
        assert!(out.contains("variadic function"), "{out}");
        assert!(!out.contains("fn f"), "{out}");
    }

    #[test]
    fn crate_path_forms() {
        for (text, expected) in [
            ("::sqlx_atomic", quote!(::sqlx_atomic)),
            ("crate", quote!(crate)),
            ("self::sa", quote!(self::sa)),
            (
                "crate::reexports::sqlx_atomic",
                quote!(crate::reexports::sqlx_atomic),
            ),
        ] {
            let krate = ok(quote!(crate = #text)).krate.unwrap();
            assert_eq!(quote!(#krate).to_string(), expected.to_string(), "{text}");
        }
    }

    #[test]
    fn raw_identifiers_are_accepted() {
        assert!(ok(quote!(r#using = "a")).using.is_some());
    }

    #[test]
    fn unknown_argument() {
        assert_eq!(
            errors(quote!(foo = 1)),
            [
                "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable`, `isolation`, `read_only`, `lock`, `timeout`, `retry` or `crate`"
            ]
        );
        assert_eq!(errors(quote!(foo)).len(), 1);
        assert_eq!(errors(quote!(foo(1, 2))).len(), 1);
    }

    #[test]
    fn every_error_is_reported() {
        let messages = errors(quote!(
            foo = 1,
            using = "",
            savepoint = "no",
            savepoint = true,
            durable = maybe
        ));
        assert_eq!(
            messages,
            [
                "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable`, `isolation`, `read_only`, `lock`, `timeout`, `retry` or `crate`",
                "the database alias cannot be empty",
                "expected `true` or `false` for `savepoint`",
                "expected `true` or `false` for `durable`",
            ]
        );
    }

    #[test]
    fn syntax_errors_are_errors_not_panics() {
        for args in [
            "using",
            "using =",
            "=",
            ",",
            ",,",
            "using = \"a\",,",
            "using = \"a\" \"b\"",
            "using \"a\"",
            "using = = \"a\"",
            "savepoint = true false",
            "= true",
            "\"a\"",
            "3",
            "using = \"a\"; savepoint = true",
            "(using = \"a\")",
            "using = [\"a\"]",
            "crate",
            "crate =",
            "using: \"a\"",
            "durable = !",
            "#",
            "::",
        ] {
            let messages = errors_str(args);
            assert!(!messages.is_empty(), "{args}");
        }
    }

    #[test]
    fn syntax_error_messages() {
        assert_eq!(
            errors_str("using"),
            ["expected `=` after `using`, e.g. `using = \"default\"`"]
        );
        assert_eq!(
            errors_str("savepoint"),
            ["expected `=` after `savepoint`, e.g. `savepoint = false`"]
        );
        assert_eq!(
            errors_str("retry"),
            ["expected `=` after `retry`, e.g. `retry = 3`"]
        );
        assert_eq!(
            errors_str("timeout ="),
            ["expected a value after `timeout =`, e.g. `timeout = \"5s\"`"]
        );
        assert_eq!(
            errors_str("isolation"),
            ["expected `=` after `isolation`, e.g. `isolation = \"serializable\"`"]
        );
        assert_eq!(
            errors_str("lock"),
            ["expected `=` after `lock`, e.g. `lock = \"immediate\"`"]
        );
        assert_eq!(
            errors_str("read_only"),
            ["expected `=` after `read_only`, e.g. `read_only = true`"]
        );
        assert_eq!(
            errors_str("using ="),
            ["expected a value after `using =`, e.g. `using = \"default\"`"]
        );
        assert_eq!(
            errors_str("using = \"a\" \"b\""),
            ["expected `,` between the arguments of #[atomic]"]
        );
        assert_eq!(
            errors_str(","),
            [
                "expected an argument of #[atomic]: `using`, `savepoint`, `durable`, `isolation`, `read_only`, `lock`, `timeout`, `retry` or `crate`"
            ]
        );
    }

    #[test]
    fn parsing_continues_after_a_syntax_error() {
        assert_eq!(
            errors_str("using = \"a\" \"b\", foo = 1, durable = 2"),
            [
                "expected `,` between the arguments of #[atomic]",
                "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable`, `isolation`, `read_only`, `lock`, `timeout`, `retry` or `crate`",
                "expected `true` or `false` for `durable`",
            ]
        );
    }
}
