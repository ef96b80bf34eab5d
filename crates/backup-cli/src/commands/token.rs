//! `token`: the tokens of the daemon's users, which the configuration
//! holds only as Argon2 hashes ([`backup_ops::access`]).

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::Result;
use backup_ops::secret::ExposeSecret as _;

use crate::cli::TokenCommand;
use crate::context::Ctx;

/// Prints a hash of a given token, or a new token with its hash.
pub(crate) fn run(ctx: &Ctx, cmd: &TokenCommand) -> Result<u8> {
    let (token, fresh) = match cmd {
        TokenCommand::Hash => (read_token()?, false),
        TokenCommand::New => (backup_ops::access::new_token(), true),
    };
    let hash = backup_ops::access::hash_token(&token).map_err(backup_ops::Error::usage)?;
    if ctx.global.json {
        let mut doc = serde_json::json!({ "token_hash": hash });
        if fresh {
            doc["token"] = serde_json::json!(token);
        }
        ctx.print_json(&doc)?;
    } else if fresh {
        println!("token:      {token}");
        println!("token_hash: {hash}");
        note!("give the token to its user now: it is stored nowhere and cannot be shown again");
    } else {
        println!("{hash}");
    }
    Ok(0)
}

/// The token from one line of standard input, or from a prompt on a
/// terminal.
fn read_token() -> Result<String> {
    let token = if std::io::stdin().is_terminal() {
        crate::context::prompt("token", false, "pipe it on standard input")?
            .expose_secret()
            .to_owned()
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if token.is_empty() {
        return Err(backup_ops::Error::usage("the token is empty: give it on standard input, e.g. `printf %s \"$TOKEN\" | backup token hash`").into());
    }
    Ok(token)
}
