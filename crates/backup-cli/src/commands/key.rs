//! `backup key`.

use std::io::Write;

use anyhow::{Context as _, Result};
use backup_core::keys::KdfParams;

use crate::cli::KeyCommand;
use crate::context::{bytes, new_password, Ctx};

pub(crate) async fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<u8> {
    let mut repo = ctx.open().await?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.keys().await?;
            if ctx.global.json {
                ctx.print_json(&keys)?;
            } else {
                ctx.say(format!(
                    "{:<1} {:<8}  {:<25}  {}",
                    "", "ID", "CREATED", "USER@HOST"
                ))?;
                for k in keys {
                    ctx.say(format!(
                        "{:<1} {:<8}  {:<25}  {}@{}",
                        if k.current { "*" } else { "" },
                        k.id.short(),
                        k.created.format("%Y-%m-%d %H:%M:%S UTC"),
                        k.user,
                        k.host
                    ))?;
                }
            }
        }
        KeyCommand::Add(a) => {
            let pw = new_password(a.new_password_file.as_deref())?;
            let id = repo.add_key(bytes(&pw), KdfParams::default()).await?;
            report(ctx, "added key", &id.to_hex())?;
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(&id).await?;
            report(ctx, "removed key", &removed.to_hex())?;
        }
        KeyCommand::Passwd(a) => {
            let pw = new_password(a.new_password_file.as_deref())?;
            let id = repo
                .change_password(bytes(&pw), KdfParams::default())
                .await?;
            report(ctx, "password changed; new key", &id.to_hex())?;
        }
        KeyCommand::Export { to, new } => {
            let pw = new_password(new.new_password_file.as_deref())?;
            let exported = repo.export_key(bytes(&pw), KdfParams::default()).await?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&to)
                .with_context(|| format!("creating {} (it must not exist)", to.display()))?;
            f.write_all(&exported)?;
            f.sync_all()?;
            report(ctx, "exported the master key to", &to.display().to_string())?;
            ctx.say("open the repository with it using --key-file and its password")?;
        }
    }
    Ok(0)
}

fn report(ctx: &Ctx, what: &str, value: &str) -> Result<()> {
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({"result": what, "value": value}))
    } else {
        ctx.say(format!("{what} {value}"))
    }
}
