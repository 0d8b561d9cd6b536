//! Batching across callers (the API and the Python module): each caller decodes its own
//! images on its own thread, then hands them to one forward-pass thread, which merges the
//! images of concurrent calls, up to `inference.batch_size`, into one forward pass and gives
//! each caller its own rows back, in order. A caller announces itself before it decodes, so
//! the thread knows who is still coming: a pass starts as soon as every announced caller has
//! handed its images over and no other has announced itself for a moment (`REJOIN_GAP`), or
//! the batch is full, and waits for a late one at most `inference.max_batch_delay_ms` after
//! the first images arrived. A bad image fails only
//! itself (it never reaches the queue); a caller that gives up or goes away only loses its
//! answer: the thread never waits on a caller beyond that delay.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::Predictor;
use crate::score::ImageScores;

type Answer = Result<Vec<ImageScores>, String>;

/// How long a pass waits, once nobody announced is still decoding, for a caller to announce
/// itself: callers answered by the last pass come back staggered (a Python caller needs the
/// GIL to return and call again), most within this of each other (measured with 8 Python
/// callers: no gap 0.53–0.74× one batched call's throughput, 300 µs 0.73–0.74×, 1 ms 0.68–0.70×).
const REJOIN_GAP: Duration = Duration::from_micros(300);

enum Message {
    /// A caller has begun decoding images it will hand over.
    Coming,
    /// A caller that announced itself hands over nothing (its images all failed, or it went away).
    NotComing,
    /// An announced caller's decoded images, and where to send their rows.
    Images(Request),
}

struct Request {
    images: Vec<RgbImage>,
    reply: Sender<Answer>,
}

/// The queue to the forward-pass thread, started with the first call.
pub(super) struct Batcher {
    /// `None` only while dropping.
    queue: Mutex<Option<Sender<Message>>>,
    forward_passes: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The process that started the thread: a child made by `fork` has none of the parent's
    /// threads, so it must start its own (see [`Batcher::is_in_this_process`]).
    pid: u32,
}

/// How often a caller waiting for its answer checks that the forward-pass thread still runs.
const ANSWER_CHECK: Duration = Duration::from_millis(250);

impl Batcher {
    pub(super) fn start(predictor: Arc<Predictor>, max_delay: Duration) -> Self {
        let (sender, receiver) = channel();
        let forward_passes = Arc::new(AtomicUsize::new(0));
        let passes = forward_passes.clone();
        let thread = std::thread::Builder::new()
            .name("imgtype-batcher".into())
            .spawn(move || serve(&predictor, &receiver, max_delay, &passes))
            .expect("a thread for the forward passes");
        Self { queue: Mutex::new(Some(sender)), forward_passes, thread: Some(thread), pid: std::process::id() }
    }

    /// False in a child process made by `fork` after this batcher started: its thread did
    /// not survive the fork, and nothing sent to it would ever be answered.
    pub(super) fn is_in_this_process(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Whether the forward-pass thread can still answer.
    fn is_serving(&self) -> bool {
        self.is_in_this_process() && self.thread.as_ref().is_some_and(|thread| !thread.is_finished())
    }

    /// Announces a caller about to decode images, so the next pass waits for them; the
    /// caller then hands them over with [`Coming::score`].
    pub(super) fn coming(&self) -> Coming<'_> {
        self.send(Message::Coming);
        Coming { batcher: self, handed_over: false }
    }

    fn send(&self, message: Message) -> bool {
        let _section = crate::forksafe::enter();
        let Ok(queue) = crate::forksafe::lock(&self.queue, "the queue to the forward passes") else { return false };
        queue.as_ref().is_some_and(|queue| queue.send(message).is_ok())
    }

    /// Forward passes run so far (each over one or more callers' images).
    pub(super) fn forward_passes(&self) -> usize {
        self.forward_passes.load(Ordering::SeqCst)
    }
}

/// An announced caller; dropped without handing images over, it tells the thread not to wait.
pub(super) struct Coming<'a> {
    batcher: &'a Batcher,
    handed_over: bool,
}

impl Coming<'_> {
    /// Scores `images` (at most `inference.batch_size`) in a forward pass shared with other
    /// callers' images.
    pub(super) fn score(mut self, images: Vec<RgbImage>) -> Answer {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        self.handed_over = true;
        let (reply, answer) = channel();
        if !self.batcher.send(Message::Images(Request { images, reply })) {
            return Err("the forward-pass thread has stopped".to_string());
        }
        // Never a wait on a thread that is gone: it is checked on while the answer is awaited.
        loop {
            match answer.recv_timeout(ANSWER_CHECK) {
                Ok(answer) => return answer,
                Err(RecvTimeoutError::Timeout) if self.batcher.is_serving() => {}
                Err(_) => return Err("the forward-pass thread stopped before answering".into()),
            }
        }
    }
}

impl Drop for Coming<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.batcher.send(Message::NotComing);
        }
    }
}

/// Closes the queue and waits for the thread, so its share of the predictor is released. In
/// a child made by `fork` there is no thread to wait for: its handle (and the predictor's
/// share it holds) is left alone, as joining or detaching a thread of another process is not
/// defined.
impl Drop for Batcher {
    fn drop(&mut self) {
        if !self.is_in_this_process() {
            std::mem::forget(self.thread.take());
            std::mem::forget(self.queue.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
            return;
        }
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Until every sender is gone: wait for images, gather the other announced callers' until
/// none is still decoding, the batch is full or `max_delay` has passed, run one forward
/// pass, answer each caller with its rows.
fn serve(predictor: &Predictor, queue: &Receiver<Message>, max_delay: Duration, passes: &AtomicUsize) {
    let batch_size = predictor.batch_size();
    let mut decoding = 0usize;
    let mut requests: Vec<Request> = Vec::new();
    let mut images = 0;
    let mut deadline = Instant::now();
    loop {
        let message = if requests.is_empty() {
            queue.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else if images >= batch_size {
            // Whatever is queued already goes in; nobody else is worth waiting for.
            queue.try_recv().map_err(|_| RecvTimeoutError::Timeout)
        } else if decoding == 0 {
            queue.recv_timeout(deadline.saturating_duration_since(Instant::now()).min(REJOIN_GAP))
        } else {
            queue.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        };
        match message {
            Ok(Message::Coming) => decoding += 1,
            Ok(Message::NotComing) => decoding = decoding.saturating_sub(1),
            Ok(Message::Images(request)) => {
                decoding = decoding.saturating_sub(1);
                if images + request.images.len() > batch_size && !requests.is_empty() {
                    // Too many for this pass: it starts the next one (answered right after).
                    answer(predictor, std::mem::take(&mut requests), passes);
                    images = 0;
                }
                if requests.is_empty() {
                    deadline = Instant::now() + max_delay;
                }
                images += request.images.len();
                requests.push(request);
            }
            Err(RecvTimeoutError::Timeout) => {
                answer(predictor, std::mem::take(&mut requests), passes);
                images = 0;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if !requests.is_empty() {
                    answer(predictor, requests, passes);
                }
                return;
            }
        }
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
