//! What each command prints on stdout when its work is done: results a user reads or a script
//! parses. Progress, warnings and stops go to stderr.

pub mod divide;
pub mod test;
pub mod train;
