//! The progress bar: which point runs, and how much measuring time is left.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over the planned measuring time of all points (setup time is not in it).
pub struct Progress {
    bar: ProgressBar,
    /// Milliseconds of the points already finished.
    done_ms: u64,
    /// Milliseconds per point.
    point_ms: u64,
}

impl Progress {
    /// A bar for `points` points of `duration` each.
    pub fn new(points: usize, duration: Duration) -> Progress {
        let point_ms = duration.as_millis() as u64;
        let bar = ProgressBar::new(points as u64 * point_ms);
        let style =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar, done_ms: 0, point_ms }
    }

    /// Shows what runs now.
    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Moves the bar to `elapsed` into the current point.
    pub fn tick(&self, elapsed: Duration) {
        let ms = (elapsed.as_millis() as u64).min(self.point_ms);
        self.bar.set_position(self.done_ms + ms);
    }

    /// Marks the current point done.
    pub fn finish_point(&mut self) {
        self.done_ms += self.point_ms;
        self.bar.set_position(self.done_ms);
    }

    /// Prints a line on stderr without tearing the bar (also when the bar is hidden).
    pub fn log(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
