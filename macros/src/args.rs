//! Parsing of the arguments of `#[atomic(..)]`, and what it shares with `#[non_atomic_requests(..)]`
//! and `#[sqlx_atomic::test(..)]`: the `name = value` list parser, alias lists, crate paths.
//!
//! Every argument is `name = value`. The parser never stops at the first mistake: a malformed
//! argument is skipped up to the next comma and the rest are still checked, so one compile reports
//! every mistake in the attribute.

use proc_macro2::Span;
use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::{Expr, Ident, Lit, LitBool, LitStr, Path, Signature, Token};

/// The arguments of one `#[atomic(..)]`, validated. `None` means "not given": the expansion only
/// calls the builder methods of the arguments that were written.
#[derive(Default)]
pub(crate) struct AtomicArgs {
    /// `using = "alias"`.
    pub(crate) using: Option<LitStr>,
    /// `savepoint = true | false`.
    pub(crate) savepoint: Option<LitBool>,
    /// `durable = true | false`.
    pub(crate) durable: Option<LitBool>,
    /// `crate = "path"`, already parsed as a path.
    pub(crate) krate: Option<Path>,
}

/// Parses the attribute's argument tokens, reporting every mistake at once.
pub(crate) fn parse(args: TokenStream) -> syn::Result<AtomicArgs> {
    Parser::parse2(AtomicArgs::parse, args)
}

/// The arguments `#[atomic]` knows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    Using,
    Savepoint,
    Durable,
    Crate,
}

const ATOMIC: Grammar<Name> = Grammar {
    attr: "#[atomic]",
    expected: "`using`, `savepoint`, `durable` or `crate`",
    name: |name| {
        Some(match name {
            "using" => Name::Using,
            "savepoint" => Name::Savepoint,
            "durable" => Name::Durable,
            "crate" => Name::Crate,
            _ => return None,
        })
    },
    example: |name| match name {
        Name::Using => "using = \"default\"",
        Name::Savepoint => "savepoint = false",
        Name::Durable => "durable = true",
        Name::Crate => "crate = \"::sqlx_atomic\"",
    },
};

impl Parse for AtomicArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = AtomicArgs::default();
        parse_arguments(input, &ATOMIC, |name, ident, value, errors| {
            let already_given = match name {
                Name::Using => args.using.is_some(),
                Name::Savepoint => args.savepoint.is_some(),
                Name::Durable => args.durable.is_some(),
                Name::Crate => args.krate.is_some(),
            };
            if already_given {
                errors.push(duplicate_argument(&ident));
                return;
            }
            let result = match name {
                Name::Using => alias(value).map(|lit| args.using = Some(lit)),
                Name::Savepoint => {
                    boolean(value, "savepoint").map(|lit| args.savepoint = Some(lit))
                }
                Name::Durable => boolean(value, "durable").map(|lit| args.durable = Some(lit)),
                Name::Crate => crate_path(value).map(|path| args.krate = Some(path)),
            };
            if let Err(error) = result {
                errors.push(error);
            }
        })?;
        Ok(args)
    }
}

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
    /// unchanged, so that the rest of the crate still type-checks.
    pub(crate) fn then_item(self, item: TokenStream) -> TokenStream {
        let mut tokens = self
            .0
            .map(syn::Error::into_compile_error)
            .unwrap_or_default();
        tokens.extend(item);
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
        match crate_path(value) {
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
pub(crate) fn alias_list(value: Expr, aliases: &mut Vec<LitStr>, errors: &mut Errors) {
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

fn alias(value: Expr) -> syn::Result<LitStr> {
    match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            if lit.value().is_empty() {
                Err(syn::Error::new(lit.span(), EMPTY_ALIAS))
            } else {
                Ok(lit)
            }
        }
        Expr::Lit(other) => Err(syn::Error::new_spanned(
            other,
            "expected a string literal naming a database alias, e.g. using = \"default\"",
        )),
        other => Err(syn::Error::new_spanned(
            other,
            "`using` takes a string literal naming the alias, e.g. using = \"reports\"; aliases \
             are resolved by name at run time, so for one held in a constant or computed, use the \
             function form: `Atomic::new().using(alias).run(async move { .. }).await`",
        )),
    }
}

fn boolean(value: Expr, name: &str) -> syn::Result<LitBool> {
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

pub(crate) fn crate_path(value: Expr) -> syn::Result<Path> {
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
    use super::*;
    use quote::quote;

    fn ok(args: TokenStream) -> AtomicArgs {
        match parse(args.clone()) {
            Ok(parsed) => parsed,
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
    fn no_arguments() {
        let args = ok(quote!());
        assert!(args.using.is_none());
        assert!(args.savepoint.is_none());
        assert!(args.durable.is_none());
        assert!(args.krate.is_none());
    }

    #[test]
    fn every_argument_in_any_order() {
        let args = ok(quote!(
            durable = true,
            crate = "my::sa",
            savepoint = false,
            using = "x",
        ));
        assert_eq!(args.using.unwrap().value(), "x");
        assert!(!args.savepoint.unwrap().value);
        assert!(args.durable.unwrap().value);
        let krate = args.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), quote!(my::sa).to_string());
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
                "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable` or `crate`"
            ]
        );
        assert_eq!(errors(quote!(foo)).len(), 1);
        assert_eq!(errors(quote!(foo(1, 2))).len(), 1);
    }

    #[test]
    fn duplicate_argument() {
        assert_eq!(
            errors(quote!(using = "a", savepoint = true, using = "b")),
            ["duplicate argument `using`"]
        );
        assert_eq!(
            errors(quote!(crate = "a", crate = "a")),
            ["duplicate argument `crate`"]
        );
    }

    #[test]
    fn wrong_value_types() {
        assert_eq!(
            errors(quote!(savepoint = "no")),
            ["expected `true` or `false` for `savepoint`"]
        );
        assert_eq!(
            errors(quote!(durable = 1)),
            ["expected `true` or `false` for `durable`"]
        );
        assert_eq!(
            errors(quote!(using = 3)),
            ["expected a string literal naming a database alias, e.g. using = \"default\""]
        );
        assert_eq!(
            errors(quote!(using = "")),
            ["the database alias cannot be empty"]
        );
        for non_literal in [
            quote!(using = ALIAS),
            quote!(using = some::path),
            quote!(using = f()),
        ] {
            let messages = errors(non_literal);
            assert_eq!(messages.len(), 1);
            assert!(
                messages[0].starts_with("`using` takes a string literal"),
                "{}",
                messages[0]
            );
            assert!(
                messages[0].contains("Atomic::new().using("),
                "{}",
                messages[0]
            );
        }
        for bad_crate in [
            quote!(crate = sqlx_atomic),
            quote!(crate = "not a path"),
            quote!(crate = ""),
        ] {
            let messages = errors(bad_crate);
            assert_eq!(messages.len(), 1);
            assert!(messages[0].starts_with("expected a string literal holding the path"));
        }
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
                "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable` or `crate`",
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
            errors_str("using ="),
            ["expected a value after `using =`, e.g. `using = \"default\"`"]
        );
        assert_eq!(
            errors_str("using = \"a\" \"b\""),
            ["expected `,` between the arguments of #[atomic]"]
        );
        assert_eq!(
            errors_str(","),
            ["expected an argument of #[atomic]: `using`, `savepoint`, `durable` or `crate`"]
        );
    }

    #[test]
    fn parsing_continues_after_a_syntax_error() {
        assert_eq!(
            errors_str("using = \"a\" \"b\", foo = 1, durable = 2"),
            [
                "expected `,` between the arguments of #[atomic]",
                "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable` or `crate`",
                "expected `true` or `false` for `durable`",
            ]
        );
    }
}
