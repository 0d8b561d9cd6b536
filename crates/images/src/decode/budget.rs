//! The process-wide budget of decoded pixels in flight.

/// A share of the decoded pixels the whole process may hold at once: every decode takes
/// one, sized by the image's full size, before it allocates, and holds it until the image is
/// resized and dropped. Callers beyond the budget wait their turn (first come, first served),
/// so memory grows with the budget, not with the number of callers (32 callers of a 36 MP
/// photo each took 200 MB at once). An image larger than the whole budget decodes alone.
#[must_use = "the pixels stay counted while the permit lives"]
pub struct PixelPermit {
    pixels: u64,
    /// The budget it was taken from (given back there, also after a fork replaced it).
    budget: Option<&'static PixelBudget>,
}

struct PixelBudget {
    state: std::sync::Mutex<BudgetState>,
    turn: std::sync::Condvar,
    capacity: u64,
}

#[derive(Default)]
struct BudgetState {
    in_use: u64,
    next_ticket: u64,
    serving: u64,
}

/// Decoded pixels in flight per core (at least four cores' worth): 32 MP, a 36 MP photo's
/// worth of RGB, decoder buffers and all, is about 200 MB.
pub const PIXELS_IN_FLIGHT_PER_CORE: u64 = 32_000_000;

/// The process's budget; a child made by `fork` gets a fresh one (its parent's decodes and
/// whatever lock they held are not in it): see [`PixelPermit::reset_after_fork`].
static BUDGET: std::sync::atomic::AtomicPtr<PixelBudget> = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

fn new_budget() -> *mut PixelBudget {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(4) as u64;
    Box::into_raw(Box::new(PixelBudget {
        state: std::sync::Mutex::new(BudgetState::default()),
        turn: std::sync::Condvar::new(),
        capacity: PIXELS_IN_FLIGHT_PER_CORE * cores,
    }))
}

fn pixel_budget() -> &'static PixelBudget {
    use std::sync::atomic::Ordering;
    let mut budget = BUDGET.load(Ordering::Acquire);
    if budget.is_null() {
        let fresh = new_budget();
        budget = match BUDGET.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(existing) => {
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                existing
            }
        };
    }
    // SAFETY: a budget, once stored, is never freed (a replaced one is leaked).
    unsafe { &*budget }
}

impl PixelPermit {
    /// Waits until `width`×`height` pixels fit in the budget (or nothing else is in flight).
    pub fn acquire((width, height): (u32, u32)) -> Self {
        let budget = pixel_budget();
        let pixels = width as u64 * height as u64;
        let mut state = budget.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        while state.serving != ticket || (state.in_use > 0 && state.in_use + pixels > budget.capacity) {
            state = budget.turn.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.in_use += pixels;
        state.serving += 1;
        budget.turn.notify_all();
        Self { pixels, budget: Some(budget) }
    }

    /// In a child made by `fork` (called by `forksafe`'s handler, with one thread): a new,
    /// empty budget; the parent's, with the permits of threads that are not here, is left.
    pub fn reset_after_fork() {
        if !BUDGET.load(std::sync::atomic::Ordering::Acquire).is_null() {
            BUDGET.store(new_budget(), std::sync::atomic::Ordering::Release);
        }
    }

    /// A permit for nothing (an image that was not decoded here).
    pub fn none() -> Self {
        Self { pixels: 0, budget: None }
    }

    /// Pixels now held by every permit of the process.
    pub fn in_flight() -> u64 {
        pixel_budget().state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).in_use
    }
}

impl Drop for PixelPermit {
    fn drop(&mut self) {
        let Some(budget) = self.budget else { return };
        let mut state = budget.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.in_use -= self.pixels;
        budget.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_pixels_in_flight_stay_within_the_budget() {
        let capacity = pixel_budget().capacity;
        let side = ((capacity / 3) as f64).sqrt() as u32; // a third of the budget each
        let peak = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..12 {
                scope.spawn(|| {
                    for _ in 0..5 {
                        let permit = PixelPermit::acquire((side, side));
                        peak.fetch_max(PixelPermit::in_flight(), std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        drop(permit);
                    }
                });
            }
        });
        let peak = peak.into_inner();
        assert!(peak <= capacity && peak >= 2 * side as u64 * side as u64, "peak {peak} of {capacity}");
        // An image over the whole budget still gets its turn, alone.
        drop(PixelPermit::acquire((capacity as u32, 2)));
    }
}
