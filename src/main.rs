//! The `icemaint` binary: parses the command line and hands over to [`icemaint::app`].
fn main() {}
