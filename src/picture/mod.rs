//! Pictures of runs: the [outlook] (the graph as of now plus
//! every future its promises still allow), drawn as [SVG or DOT](render),
//! and the live picture a run keeps up to date while it runs.

pub(crate) mod live;
pub mod outlook;
pub mod render;
