//! Progress bars on a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use backup_core::progress::{NoProgress, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar with throughput and ETA.
pub(crate) struct TerminalBar {
    bar: ProgressBar,
    items: std::sync::atomic::AtomicU64,
    noun: &'static str,
}

impl Progress for TerminalBar {
    fn set_total(&self, bytes: u64) {
        self.bar.set_length(bytes);
        self.bar.set_style(style(true));
    }
    fn add_bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn add_item(&self) {
        let n = self
            .items
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n % 64 == 0 {
            self.bar.set_message(format!("{n} {}", self.noun));
        }
    }
    fn set_phase(&self, phase: &str) {
        self.bar.set_prefix(phase.to_owned());
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for TerminalBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn style(with_total: bool) -> ProgressStyle {
    let template = if with_total {
        "{prefix:>10} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}"
    } else {
        "{prefix:>10} [{elapsed_precise}] {spinner} {bytes} {binary_bytes_per_sec} {msg}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Whether a progress bar can be drawn: standard error is a terminal.
pub(crate) fn drawn() -> bool {
    std::io::stderr().is_terminal()
}

/// A progress reporter: a bar when standard error is a terminal and output
/// is for humans, nothing otherwise.
pub(crate) fn reporter(enabled: bool, phase: &str, noun: &'static str) -> Arc<dyn Progress> {
    if !enabled || !drawn() {
        return Arc::new(NoProgress);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(style(false));
    bar.set_prefix(phase.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    Arc::new(TerminalBar {
        bar,
        items: std::sync::atomic::AtomicU64::new(0),
        noun,
    })
}
