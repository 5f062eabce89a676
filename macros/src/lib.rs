//! stub
use proc_macro::TokenStream;
/// stub
#[proc_macro_attribute]
pub fn atomic(_a: TokenStream, item: TokenStream) -> TokenStream { item }
