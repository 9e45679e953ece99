//! The `herald` command.
fn main() {}
