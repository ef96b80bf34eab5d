//! `backup key`.

use std::io::Write;

use std::os::unix::fs::OpenOptionsExt;

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
                    "{:<1} {:<8}  {:<14}  {:<25}  {}",
                    "", "ID", "KIND", "CREATED", "USER@HOST"
                ))?;
                for k in keys {
                    let mut held = k
                        .kms
                        .as_ref()
                        .map_or(String::new(), |key| format!("  {key}"));
                    if let Some(name) = &k.name {
                        held = format!("  name={name}{held}");
                    }
                    ctx.say(format!(
                        "{:<1} {:<8}  {:<14}  {:<25}  {}@{}{held}",
                        if k.current { "*" } else { "" },
                        k.id.short(),
                        k.kind,
                        k.created.format("%Y-%m-%d %H:%M:%S UTC"),
                        k.user,
                        k.host
                    ))?;
                }
            }
        }
        KeyCommand::Add(a) if a.write_only => {
            let kms = a.kms.as_ref().map(|k| (backup_storage::kms::client(), k));
            let pw = match &kms {
                Some(_) => None,
                None => Some(new_password(a.new.new_password_file.as_deref())?),
            };
            let id = repo
                .add_write_only_key(
                    pw.as_ref().map(bytes),
                    KdfParams::default(),
                    kms.as_ref().map(|(c, k)| (c.as_ref(), *k)),
                    a.name.as_deref(),
                )
                .await?;
            // Its audit record is sealed as the new format version says.
            ctx.set_opened(&repo);
            report(ctx, "added write-only key", &id.to_hex())?;
        }
        KeyCommand::Add(a) => {
            if a.name.is_some() {
                anyhow::bail!(backup_ops::Error::usage(
                    "--name is for write-only keys (`key add --write-only --name NAME`)"
                ));
            }
            let id = if let Some(key) = &a.kms {
                let kms = backup_storage::kms::client();
                repo.add_kms_key(kms.as_ref(), key).await?
            } else {
                let pw = new_password(a.new.new_password_file.as_deref())?;
                repo.add_key(bytes(&pw), KdfParams::default()).await?
            };
            report(ctx, "added key", &id.to_hex())?;
        }
        KeyCommand::RotateKms { to } => {
            let kms = backup_storage::kms::client();
            let rotated = repo.rotate_kms(kms.as_ref(), to.as_ref()).await?;
            if ctx.global.json {
                let pairs: Vec<_> = rotated
                    .iter()
                    .map(|(old, new)| serde_json::json!({"old": old, "new": new}))
                    .collect();
                ctx.print_json(&serde_json::json!({"result": "rotated", "keys": pairs}))?;
            } else {
                for (old, new) in rotated {
                    ctx.say(format!(
                        "rewrapped KMS key {} as {}",
                        old.short(),
                        new.to_hex()
                    ))?;
                }
            }
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
        KeyCommand::Export {
            to,
            no_password,
            new,
        } => {
            let exported = if no_password {
                repo.export_plain_key()?
            } else {
                let pw = new_password(new.new_password_file.as_deref())?;
                repo.export_key(bytes(&pw), KdfParams::default()).await?
            };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to)
                .with_context(|| format!("creating {} (it must not exist)", to.display()))?;
            f.write_all(&exported)?;
            f.sync_all()?;
            report(ctx, "exported the master key to", &to.display().to_string())?;
            ctx.say(if no_password {
                "open the repository with it using --key-file (no password); anyone who can read it can open the repository"
            } else {
                "open the repository with it using --key-file and its password"
            })?;
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
