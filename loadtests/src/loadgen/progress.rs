//! The progress bar while a load runs: triggers sent against the plan, runs completed,
//! runs in flight and the completion rate of the last second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::loadgen::tally::Tally;

pub struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(planned: u64, sent: Arc<AtomicU64>, tally: Arc<Mutex<Tally>>) -> Self {
        let bar = ProgressBar::new(planned);
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} sent, {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut last = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut recent = std::collections::VecDeque::from([0u64; 4]);
            loop {
                tick.tick().await;
                let (done, in_flight) = match tally.lock() {
                    Ok(t) => (t.completed(), t.in_flight()),
                    Err(_) => continue,
                };
                recent.push_back(done - last);
                recent.pop_front();
                last = done;
                shown.set_position(sent.load(Ordering::Relaxed));
                shown.set_message(format!(
                    "{done} completed, {in_flight} in flight, {} runs/s",
                    recent.iter().sum::<u64>()
                ));
            }
        });
        Self { bar, ticker }
    }

    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
