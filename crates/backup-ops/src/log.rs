//! How both binaries write their log to standard error: when colour is
//! used (`--color auto|always|never`, `NO_COLOR`, `TERM=dumb`), and the
//! one-line form of the `backup` command (`warning: message (field=value)`,
//! the form its own `error:` and `warning:` lines take).
//!
//! Logs end up in journald, cron mail and CI logs, where escape codes are
//! noise: colour is used only when standard error is a terminal and the
//! environment does not ask otherwise, unless `--color always` says so.

use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// When to colour log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Color {
    /// Colour when standard error is a terminal, `NO_COLOR` is unset (or
    /// empty) and `TERM` is not `dumb`.
    #[default]
    Auto,
    /// Always colour, whatever the environment says (an explicit flag
    /// wins over the environment).
    Always,
    /// Never colour.
    Never,
}

impl std::str::FromStr for Color {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Color::Auto),
            "always" => Ok(Color::Always),
            "never" => Ok(Color::Never),
            other => Err(format!(
                "`{other}` is not a colour choice: use auto, always or never"
            )),
        }
    }
}

impl Color {
    /// Whether to colour a stream: `is_terminal` says whether the stream
    /// is one; `NO_COLOR` and `TERM` are read from `env`.
    pub fn enabled_with(self, is_terminal: bool, env: impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                is_terminal
                    && env("NO_COLOR").is_none_or(|v| v.is_empty())
                    && env("TERM").as_deref() != Some("dumb")
            }
        }
    }

    /// Whether to colour standard error, in this process's environment.
    pub fn for_stderr(self) -> bool {
        self.enabled_with(std::io::stderr().is_terminal(), |k| std::env::var(k).ok())
    }
}

/// The `backup` command's log line: `warning: Message. (key=value, ...)`,
/// with the level word coloured when `ansi` is set. No time (the command
/// runs in the foreground) and no target.
#[derive(Debug, Clone, Copy)]
pub struct OneLine {
    /// Colour the level word.
    pub ansi: bool,
}

impl<S, N> FormatEvent<S, N> for OneLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(writer, "{}", line(level, &fields, self.ansi))
    }
}

/// The word a level is printed as, as the command's own lines say it.
fn level_word(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn line(level: Level, fields: &Fields, ansi: bool) -> String {
    let word = level_word(level);
    let mut out = String::new();
    if ansi {
        let colour = match level {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            Level::DEBUG => "34",
            Level::TRACE => "35",
        };
        let _ = write!(out, "\x1b[{colour}m{word}\x1b[0m: ");
    } else {
        let _ = write!(out, "{word}: ");
    }
    out.push_str(&fields.message);
    if !fields.rest.is_empty() {
        let rest: Vec<String> = fields
            .rest
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(out, " ({})", rest.join(", "));
    }
    out
}

/// An event's message and its other fields, in the order given.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        } else {
            self.rest.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.push((field.name(), format!("{value:?}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn auto_colours_only_a_terminal_the_environment_does_not_refuse() {
        assert!(Color::Auto.enabled_with(true, env(&[("TERM", "xterm")])));
        assert!(!Color::Auto.enabled_with(false, env(&[("TERM", "xterm")])));
        assert!(!Color::Auto.enabled_with(true, env(&[("NO_COLOR", "1")])));
        assert!(Color::Auto.enabled_with(true, env(&[("NO_COLOR", "")])));
        assert!(!Color::Auto.enabled_with(true, env(&[("TERM", "dumb")])));
        assert!(Color::Always.enabled_with(false, env(&[("NO_COLOR", "1")])));
        assert!(!Color::Never.enabled_with(true, env(&[])));
    }

    #[test]
    fn a_line_is_the_level_word_the_message_and_the_fields() {
        let fields = Fields {
            message: "Could not remove a temporary file.".to_owned(),
            rest: vec![("path", "/tmp/x".to_owned()), ("error", "busy".to_owned())],
        };
        assert_eq!(
            line(Level::WARN, &fields, false),
            "warning: Could not remove a temporary file. (path=/tmp/x, error=busy)"
        );
        assert_eq!(
            line(Level::ERROR, &fields, true),
            "\x1b[31merror\x1b[0m: Could not remove a temporary file. (path=/tmp/x, error=busy)"
        );
        assert_eq!("never".parse::<Color>(), Ok(Color::Never));
        assert!("sometimes".parse::<Color>().is_err());
    }
}
