//! Procedural macros for orch: `#[orch::task]`.
//!
//! This crate is glue. [`task`] parses the attribute and the function
//! (`options.rs`, `parse.rs`), then writes code that calls only
//! `::orch::__private` (`expand.rs`); every decision is a plain function
//! with unit tests. On an error the user's item is emitted unchanged
//! beside a `compile_error!` spanned on the offending token, so the rest of
//! the program still type-checks.
//!
//! Use it through the `orch` crate: `#[orch::task]`, documented there.

use proc_macro::TokenStream;

mod expand;
mod options;
mod parse;

/// Turns a function into a typed orch task; see the `orch` crate's docs
/// (`orch::task`, `docs/typed.md`).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}
