//! How a restored PostgreSQL server reaches the repository to fetch WAL
//! during a point-in-time drill or restore (its `restore_command`).

/// The command a point-in-time drill's restored server runs to fetch WAL
/// when the drill runs inside another program (`backupd`): the `backup`
/// program installed beside it, reaching the configured repository `repo`
/// ([`replay_command`]). `None` when there is no such program (the
/// restore then names the running one).
pub fn sibling_replay_command(repo: &crate::config::RepositoryConfig) -> Option<String> {
    let exe = std::env::current_exe().ok()?.with_file_name("backup");
    exe.is_file().then(|| {
        replay_command(
            &exe,
            &repo.url,
            repo.options.iter().map(|(k, v)| (*k, v.as_str())),
        )
    })
}

/// `PROGRAM --repo URL -o KEY=VALUE…`: how a restored PostgreSQL server's
/// `restore_command` (which runs without this process's environment or
/// configuration file) reaches the repository: its URL as given (a local
/// path made absolute) and its storage options, except those that hold a
/// secret. Secrets never go into the restored server's configuration: the
/// server's user reaches them another way (its environment, an instance
/// role, a credentials file).
pub fn replay_command<'a>(
    program: &std::path::Path,
    url: &str,
    options: impl IntoIterator<Item = (backup_storage::StorageOptionKey, &'a str)>,
) -> String {
    use backup_sources::postgres::physical::pitr::shell_quote;
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        std::path::absolute(url).map_or_else(|_| url.to_owned(), |p| p.display().to_string())
    };
    let mut command = format!(
        "{} --repo {}",
        shell_quote(&program.display().to_string()),
        shell_quote(&url)
    );
    for (key, value) in options {
        if !key.is_secret() {
            command.push_str(" -o ");
            command.push_str(&shell_quote(&format!("{key}={value}")));
        }
    }
    command
}
