//! The whole-pixel shift that best lines up two photos' detail, every shift at once by FFT:
//! the row and column means cannot see the phase of a fine stripe or weave.

use super::SIDE;

/// The largest shift, in close-up pixels, [`best_shift`] looks for.
const MAX_SHIFT: isize = 4;

/// The whole-pixel shift (dx, dy) with `source` at (x + dx, y + dy) best matching `target`
/// at (x, y), within [`MAX_SHIFT`]: the peak of their detail's cross-correlation (channels
/// summed), every shift at once by FFT. Circular, which a shift this small barely feels.
pub(super) fn best_shift(source: &[f32], target: &[f32]) -> (isize, isize) {
    use rustfft::num_complex::Complex32;
    let planner = fft_plans();
    let transform = |planes: &[f32]| {
        let mut grid: Vec<Complex32> = (0..SIDE * SIDE)
            .map(|i| Complex32::new(planes[i] + planes[SIDE * SIDE + i] + planes[2 * SIDE * SIDE + i], 0.0))
            .collect();
        fft_2d(&mut grid, &planner.0);
        grid
    };
    let (source, target) = (transform(source), transform(target));
    let mut product: Vec<Complex32> = source.iter().zip(&target).map(|(s, t)| s * t.conj()).collect();
    fft_2d(&mut product, &planner.1);
    let mut best = (f32::MIN, 0, 0);
    for dy in -MAX_SHIFT..=MAX_SHIFT {
        for dx in -MAX_SHIFT..=MAX_SHIFT {
            let at = dy.rem_euclid(SIDE as isize) as usize * SIDE + dx.rem_euclid(SIDE as isize) as usize;
            if product[at].re > best.0 {
                best = (product[at].re, dx, dy);
            }
        }
    }
    (best.1, best.2)
}

type FftPlan = std::sync::Arc<dyn rustfft::Fft<f32>>;

/// The forward and inverse SIDE-point FFT plans, made once.
fn fft_plans() -> &'static (FftPlan, FftPlan) {
    static PLANS: std::sync::OnceLock<(FftPlan, FftPlan)> = std::sync::OnceLock::new();
    PLANS.get_or_init(|| {
        let mut planner = rustfft::FftPlanner::new();
        (planner.plan_fft_forward(SIDE), planner.plan_fft_inverse(SIDE))
    })
}

/// A SIDE×SIDE row-major grid transformed in place: its rows, then its columns.
fn fft_2d(grid: &mut [rustfft::num_complex::Complex32], plan: &FftPlan) {
    plan.process(grid);
    let mut column = vec![rustfft::num_complex::Complex32::default(); SIDE];
    for x in 0..SIDE {
        (0..SIDE).for_each(|y| column[y] = grid[y * SIDE + x]);
        plan.process(&mut column);
        (0..SIDE).for_each(|y| grid[y * SIDE + x] = column[y]);
    }
}
