//! The progress bar of `demo` and `load` (indicatif, on stderr), hidden when stdout is not a
//! terminal or when asked to be quiet.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::load::Progress;
use super::report::group;

/// Steps of the bar: progress is shown in thousandths.
const STEPS: u64 = 1000;

/// A progress bar that may be hidden.
#[derive(Debug, Clone)]
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar drawn on stderr unless `quiet` or stdout is not a terminal.
    pub fn new(quiet: bool) -> Bar {
        if quiet || !std::io::stdout().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(STEPS), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>8} [{bar:32}] {percent:>3}% {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar(bar)
    }

    /// A hidden bar.
    pub fn hidden() -> Bar {
        Bar(ProgressBar::hidden())
    }

    /// Shows seeding progress: `done` of `total` rows.
    pub fn seeding(&self, done: u64, total: u64) {
        self.0.set_prefix("seed");
        self.0
            .set_message(format!("{} / {} rows", group(done), group(total)));
        self.0.set_position(done * STEPS / total.max(1));
    }

    /// Shows a run's progress.
    pub fn load(&self, p: &Progress) {
        self.0.set_prefix(p.phase.clone());
        let secs = p.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            (p.ops as f64 / secs) as u64
        } else {
            0
        };
        self.0.set_message(format!(
            "{} calls, {} ops/s, {secs:.1} s",
            group(p.ops),
            group(rate)
        ));
        self.0.set_position((p.fraction * STEPS as f64) as u64);
    }

    /// Starts the bar over for the next stage.
    pub fn reset(&self) {
        self.0.reset();
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
