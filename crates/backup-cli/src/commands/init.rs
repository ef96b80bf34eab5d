//! `backup init`.

use anyhow::Result;
use backup_core::config::ChunkerParams;
use backup_core::crypto::IdHash;
use backup_core::repo::{InitOptions, KmsInit, Repository};

use crate::cli::InitArgs;
use crate::context::{bytes, usage, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: InitArgs) -> Result<u8> {
    let spec = ctx.repo_spec()?;
    let sink = spec.sink()?;
    let Ok(avg) = u32::try_from(a.chunk_size) else {
        return usage("--chunk-size is too large");
    };
    let Ok(pack_size) = u32::try_from(a.pack_size) else {
        return usage("--pack-size is too large");
    };
    let opts = InitOptions {
        encrypt: !a.insecure_no_encryption,
        chunker: ChunkerParams::with_average(avg)?,
        compression_level: a.compression_level,
        pack_size,
        id_hash: if a.id_hash == "hmac-sha256" {
            IdHash::HmacSha256
        } else {
            IdHash::Blake3
        },
        kms: a.kms.clone().map(|key| KmsInit {
            client: backup_storage::kms::client(),
            key,
        }),
        ..InitOptions::default()
    };
    let password = if a.insecure_no_encryption {
        None
    } else if let Some(source) = &spec.password {
        // A configured repository: the password its configuration names.
        Some(source.resolve(&spec.password_key)?)
    } else if a.kms.is_some() {
        // With a KMS key, a password key only when one is given: no prompt.
        ctx.given_password().transpose()?
    } else {
        Some(ctx.password(true)?)
    };
    // Object Lock is the bucket's: check it before anything is written.
    let bucket_lock = match spec.options.s3.object_lock {
        Some(_) => Some(backup_storage::object_lock::check_bucket(&spec.url, &spec.options).await?),
        None => None,
    };
    let repo = Repository::init(sink, password.as_ref().map(bytes), &opts).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "repository": spec.redacted(),
            "id": repo.config().id,
            "encrypted": !a.insecure_no_encryption,
            "chunker": repo.config().chunker,
            "compression_level": repo.config().compression.level,
            "id_hash": repo.config().id_hash,
            "format_version": repo.config().version,
            "key": repo.key_id(),
            "object_lock": spec.options.s3.object_lock,
            "kms": a.kms,
            "password_key": password.is_some(),
        }))?;
    } else {
        ctx.say(format!(
            "created repository {} at {}",
            &repo.config().id[..8],
            spec.redacted()
        ))?;
        if let Some(lock) = &bucket_lock {
            ctx.say(format!(
                "S3 Object Lock: every object is locked for {} ({} mode) by the bucket's default retention; forget and prune keep locked objects and say until when",
                lock.period.as_deref().unwrap_or("?"),
                lock.mode.as_deref().unwrap_or("?")
            ))?;
        }
        if a.insecure_no_encryption {
            ctx.say("warning: the repository is NOT encrypted")?;
        } else if let Some(key) = &a.kms {
            ctx.say(format!("the master key is held by KMS key {key}: this repository opens with no password where that key may be used"))?;
            if password.is_none() {
                ctx.say("warning: no password key was made; if the KMS key is lost, disabled or deleted, the data cannot be read. Add a break-glass key with `backup key add` and keep its password offline")?;
            }
        } else {
            ctx.say("keep the password safe: without it the data cannot be read (`backup key export` writes an escrow copy)")?;
        }
    }
    Ok(0)
}
