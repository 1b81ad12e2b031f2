//! Where runs live: the history of every run and its materialised views.

mod sqlite;

pub use sqlite::*;
