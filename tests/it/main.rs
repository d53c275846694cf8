//! Integration tests: one test binary (`cargo test --test it`). Add a module per area below.

mod api;
mod daemon;
mod deploy;
mod observe;
mod status_page;
