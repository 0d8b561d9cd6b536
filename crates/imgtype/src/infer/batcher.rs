//! Batching across callers (the API and the Python module): each caller decodes its own
//! images on its own thread, then hands them to one forward-pass thread, which merges the
//! images of the calls that arrive within `inference.max_batch_delay_ms` of the first (and
//! less than a millisecond apart), up to `inference.batch_size`, into one forward pass and gives each caller its own rows back,
//! in order. A bad image fails only itself (it never reaches the queue); a caller that gives
//! up or goes away only loses its answer: the thread never waits on a caller.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::Predictor;
use crate::score::ImageScores;

type Answer = Result<Vec<ImageScores>, String>;

/// How long the queue may stay quiet before a pass starts (bounded by the batch delay).
const QUIET_GAP: Duration = Duration::from_millis(1);

struct Request {
    images: Vec<RgbImage>,
    reply: Sender<Answer>,
}

/// The queue to the forward-pass thread, started with the first call.
pub(super) struct Batcher {
    /// `None` only while dropping.
    queue: Mutex<Option<Sender<Request>>>,
    forward_passes: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Batcher {
    pub(super) fn start(predictor: Arc<Predictor>, max_delay: Duration) -> Self {
        let (sender, receiver) = channel();
        let forward_passes = Arc::new(AtomicUsize::new(0));
        let passes = forward_passes.clone();
        let thread = std::thread::Builder::new()
            .name("imgtype-batcher".into())
            .spawn(move || serve(&predictor, &receiver, max_delay, &passes))
            .expect("a thread for the forward passes");
        Self { queue: Mutex::new(Some(sender)), forward_passes, thread: Some(thread) }
    }

    /// Scores `images` (at most `inference.batch_size`) in a forward pass shared with other
    /// callers' images.
    pub(super) fn score(&self, images: Vec<RgbImage>) -> Answer {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = channel();
        let queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sent = queue.as_ref().map(|queue| queue.send(Request { images, reply }));
        drop(queue);
        sent.and_then(Result::ok).ok_or_else(|| "the forward-pass thread has stopped".to_string())?;
        answer.recv().unwrap_or_else(|_| Err("the forward-pass thread stopped before answering".into()))
    }

    /// Forward passes run so far (each over one or more callers' images).
    pub(super) fn forward_passes(&self) -> usize {
        self.forward_passes.load(Ordering::SeqCst)
    }
}

/// Closes the queue and waits for the thread, so its share of the predictor is released.
impl Drop for Batcher {
    fn drop(&mut self) {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Until every sender is gone: wait for a call, gather more for `max_delay` or until the
/// batch is full, run one forward pass, answer each caller with its rows.
fn serve(predictor: &Predictor, queue: &Receiver<Request>, max_delay: Duration, passes: &AtomicUsize) {
    let batch_size = predictor.batch_size();
    while let Ok(first) = queue.recv() {
        let deadline = Instant::now() + max_delay;
        let mut images = first.images.len();
        let mut requests = vec![first];
        while images < batch_size {
            // Calls that come together come within a millisecond of each other: once none
            // has come for that long, the pass starts without waiting out the whole delay.
            let left = deadline.saturating_duration_since(Instant::now()).min(QUIET_GAP);
            match queue.recv_timeout(left) {
                Ok(request) if images + request.images.len() <= batch_size => {
                    images += request.images.len();
                    requests.push(request);
                }
                // Too many for this pass: it starts the next one (answered right after).
                Ok(request) => {
                    answer(predictor, requests, passes);
                    images = request.images.len();
                    requests = vec![request];
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        answer(predictor, requests, passes);
    }
}

fn answer(predictor: &Predictor, requests: Vec<Request>, passes: &AtomicUsize) {
    let counts: Vec<usize> = requests.iter().map(|r| r.images.len()).collect();
    let (images, replies): (Vec<Vec<RgbImage>>, Vec<Sender<Answer>>) =
        requests.into_iter().map(|r| (r.images, r.reply)).unzip();
    let merged: Vec<RgbImage> = images.into_iter().flatten().collect();
    let scored = predictor.scorer().score_images(&merged);
    passes.fetch_add(1, Ordering::SeqCst);
    match scored {
        Ok(scores) => {
            let mut scores = scores.into_iter();
            for (count, reply) in counts.into_iter().zip(replies) {
                // A caller that has gone away is not waited for.
                let _ = reply.send(Ok(scores.by_ref().take(count).collect()));
            }
        }
        Err(reason) => {
            for reply in replies {
                let _ = reply.send(Err(reason.clone()));
            }
        }
    }
}
