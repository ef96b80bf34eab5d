//! `generate`: shell completions and man pages, from the same definition
//! clap parses, so that they never disagree with `--help`.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::{Cli, GenerateCommand};

/// Prints a completion script or writes the man pages; returns exit code 0.
pub(crate) fn generate(cmd: &GenerateCommand) -> Result<u8> {
    match cmd {
        GenerateCommand::Completions { shell } => {
            let mut command = Cli::command();
            let mut out = std::io::stdout().lock();
            clap_complete::generate(*shell, &mut command, "backup", &mut out);
        }
        GenerateCommand::Man { dir } => {
            let written = man_pages(Cli::command(), dir)?;
            note!("wrote {written} man pages to {}", dir.display());
        }
    }
    Ok(0)
}

/// Writes COMMAND.1 and one page per visible subcommand, at every depth,
/// into `dir` (created when missing); returns how many pages were written.
pub(crate) fn man_pages(command: clap::Command, dir: &Path) -> Result<usize> {
    fn write(command: &clap::Command, dir: &Path) -> std::io::Result<usize> {
        let mut written = 0;
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            written += write(sub, dir)?;
        }
        clap_mangen::Man::new(command.clone()).generate_to(dir)?;
        Ok(written + 1)
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut command = command.disable_help_subcommand(true);
    command.build();
    write(&command, dir).with_context(|| format!("cannot write man pages to {}", dir.display()))
}
