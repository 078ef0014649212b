//! Procedural macros of Hexeract: `#[derive(Message)]` and `#[handler]`.
//!
//! Both expand to plain trait impls (`hexeract::Message`,
//! `hexeract::Handles`, `hexeract::HandlerActor`) plus an `inventory`
//! submission, and report misuse on the offending token. Use them through
//! the `hexeract` crate, which re-exports them.

mod handler;
mod message;
mod options;

use proc_macro::TokenStream;

/// Implements `hexeract::Message` and declares the type for
/// `verify_handlers`.
///
/// ```text
/// #[derive(Message)]
/// #[message(name = "orders.place.v1", command, output = OrderId)]   // or `query`
/// #[message(name = "orders.placed.v1", notification)]               // no output
/// // optional: codec = "msgpack" | "json", key = field (per-key ordering in pools)
/// ```
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    message::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Makes an `async fn` or an `impl` block into a handler actor.
///
/// ```text
/// #[handler]                                   // options: workers = N, capacity = N,
/// async fn place_order(cmd: PlaceOrder, ctx: &Context) -> Result<OrderId, AppError>
///
/// #[handler(workers = 4)]                      //   timeout = "2s", name = "...", manual
/// impl OrderBook { async fn reserve(&mut self, cmd: Reserve, ctx: &Context) -> Result<u32, E> }
/// ```
///
/// On an `async fn` it also defines a unit struct named after the function
/// (`place_order` → `PlaceOrderHandler`), the actor type.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// The path to the `hexeract` crate as the caller's crate names it.
pub(crate) fn hexeract_path() -> proc_macro2::TokenStream {
    use proc_macro_crate::{FoundCrate, crate_name};
    match crate_name("hexeract") {
        // Inside `hexeract` itself, `extern crate self as hexeract` makes the
        // absolute path work in the library and in its tests alike.
        Ok(FoundCrate::Itself) | Err(_) => quote::quote!(::hexeract),
        Ok(FoundCrate::Name(name)) => {
            let ident = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
            quote::quote!(::#ident)
        }
    }
}
