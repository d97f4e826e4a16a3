//! `restore`: a container restored from a CRIU image by the first delegate built with CRIU (the
//! native engine has none); later commands go to that engine like for any delegated container.

use crate::cli::{Cli, RestoreArgs};
use crate::error::Result;

pub fn run(cli: &Cli, args: &RestoreArgs) -> Result<i32> {
    crate::delegate::restore(cli, &args.id, args.detach)
}
