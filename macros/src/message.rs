//! `#[derive(Message)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, LitStr, Member, Type};

use crate::hexeract_path;

enum Kind {
    Command,
    Query,
    Notification,
}

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "a message cannot be generic: its wire name must name exactly one type",
        ));
    }
    let attr = input.attrs.iter().find(|attr| attr.path().is_ident("message")).ok_or_else(|| {
        syn::Error::new(
            input.ident.span(),
            "missing `#[message(name = \"...\", command | query | notification, output = T)]`",
        )
    })?;

    let mut name: Option<LitStr> = None;
    let mut kind: Option<(Kind, proc_macro2::Span)> = None;
    let mut output: Option<(syn::Path, Type)> = None;
    let mut codec: Option<LitStr> = None;
    let mut key: Option<Member> = None;
    attr.parse_nested_meta(|meta| {
        let mut set_kind = |k: Kind| {
            if let Some((_, first)) = &kind {
                let mut error = meta.error("a message has one kind: `command`, `query` or `notification`");
                error.combine(syn::Error::new(*first, "first kind given here"));
                return Err(error);
            }
            kind = Some((k, meta.path.span()));
            Ok(())
        };
        if meta.path.is_ident("command") {
            set_kind(Kind::Command)
        } else if meta.path.is_ident("query") {
            set_kind(Kind::Query)
        } else if meta.path.is_ident("notification") {
            set_kind(Kind::Notification)
        } else if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            validate_name(&lit)?;
            name = Some(lit);
            Ok(())
        } else if meta.path.is_ident("output") {
            output = Some((meta.path.clone(), meta.value()?.parse()?));
            Ok(())
        } else if meta.path.is_ident("codec") {
            let lit: LitStr = meta.value()?.parse()?;
            if !matches!(lit.value().as_str(), "json" | "msgpack") {
                return Err(syn::Error::new(lit.span(), "unknown codec; expected \"json\" or \"msgpack\""));
            }
            codec = Some(lit);
            Ok(())
        } else if meta.path.is_ident("key") {
            key = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error(
                "unknown `#[message]` option; expected `name`, `command`, `query`, `notification`, `output`, `codec` or `key`",
            ))
        }
    })?;

    let name = name.ok_or_else(|| syn::Error::new_spanned(attr, "missing `name = \"...\"`, the stable wire name"))?;
    let (kind, kind_span) = kind.ok_or_else(|| {
        syn::Error::new_spanned(attr, "missing the message kind: add `command`, `query` or `notification`")
    })?;
    let krate = hexeract_path();
    let ident = &input.ident;
    let output = match (&kind, output) {
        (Kind::Notification, Some((key, output))) => {
            return Err(syn::Error::new_spanned(
                quote!(#key #output),
                "a notification has no output; remove `output = ...`",
            ));
        }
        (Kind::Notification, None) => quote!(()),
        (_, Some((_, output))) => quote!(#output),
        (_, None) => {
            return Err(syn::Error::new(
                kind_span,
                "a command or query needs `output = T`, the type its handler returns in `Ok` (use `output = ()` for none)",
            ));
        }
    };
    let (kind_variant, marker) = match kind {
        Kind::Command => (quote!(Command), quote_spanned!(kind_span=> impl #krate::Command for #ident {})),
        Kind::Query => (quote!(Query), quote_spanned!(kind_span=> impl #krate::Query for #ident {})),
        Kind::Notification => {
            (quote!(Notification), quote_spanned!(kind_span=> impl #krate::Notification for #ident {}))
        }
    };
    let codec = codec.map(|lit| {
        let variant = if lit.value() == "msgpack" { quote!(MessagePack) } else { quote!(Json) };
        quote!(const CODEC: ::core::option::Option<#krate::Codec> = ::core::option::Option::Some(#krate::Codec::#variant);)
    });
    let routing_key = key.map(|member| {
        quote_spanned! {member.span()=>
            fn routing_key(&self) -> ::core::option::Option<u64> {
                // Names the fix when the field is not `Hash` (an `f64`, say).
                #[diagnostic::on_unimplemented(
                    message = "a routing key must implement `Hash`, and `{Self}` does not",
                    note = "`key = field` picks the worker by the field's hash: name a `Hash` field, such as an id or a string"
                )]
                trait RoutingKey: ::core::hash::Hash {}
                impl<K: ::core::hash::Hash + ?::core::marker::Sized> RoutingKey for K {}
                fn key_of<K: RoutingKey + ?::core::marker::Sized>(key: &K) -> u64 {
                    #krate::__private::routing_key_of(key)
                }
                ::core::option::Option::Some(key_of(&self.#member))
            }
        }
    });

    Ok(quote! {
        impl #krate::Message for #ident {
            const NAME: &'static str = #name;
            const KIND: #krate::MessageKind = #krate::MessageKind::#kind_variant;
            #codec
            type Output = #output;
            #routing_key
        }
        #marker
        #krate::__private::inventory::submit! {
            #krate::__private::DeclaredMessage {
                name: #name,
                kind: #krate::MessageKind::#kind_variant,
                type_name: ::core::any::type_name::<#ident>,
                type_id: ::core::any::TypeId::of::<#ident>,
            }
        }
    })
}

/// Wire names travel as AMQP types and routing keys: keep them short and plain.
fn validate_name(lit: &LitStr) -> syn::Result<()> {
    let value = lit.value();
    let valid = !value.is_empty()
        && value.len() <= 255
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if valid {
        Ok(())
    } else {
        Err(syn::Error::new(
            lit.span(),
            "a wire name is 1 to 255 characters of ASCII letters, digits, `.`, `_`, `-` or `:`, such as \"orders.place.v1\"",
        ))
    }
}
