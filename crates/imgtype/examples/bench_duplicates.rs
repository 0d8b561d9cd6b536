//! How long the near-duplicate index takes to group a catalogue's signatures:
//! `bench_duplicates [images=100000]`. Signatures are random (structure bits and colour
//! layout), with every hundredth image a slightly altered copy of the one before, so the
//! index has real pairs to find; decoding is not included (it is per image, on all cores).
//! Prints the images, the pairs found and the seconds.

use imgtype::data::near_duplicates::{near_pairs, Signature, DEFAULT_MAX_BITS};
use rand::{Rng, SeedableRng};

fn main() {
    let count: usize = std::env::args().nth(1).map(|a| a.parse().expect("a number")).unwrap_or(100_000);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut signatures: Vec<Option<Signature>> = Vec::with_capacity(count);
    for i in 0..count {
        let signature = if i % 100 == 99 {
            let mut copy = signatures[i - 1].clone().expect("a signature");
            for _ in 0..4 {
                copy.structure ^= 1 << rng.gen_range(0..63);
            }
            copy.colour.iter_mut().for_each(|c| *c += rng.gen_range(-0.01..0.01));
            copy
        } else {
            Signature { structure: rng.gen::<u64>() >> 1, colour: std::array::from_fn(|_| rng.gen_range(0.0..1.5)) }
        };
        signatures.push(Some(signature));
    }
    let started = std::time::Instant::now();
    let pairs = near_pairs(&signatures, DEFAULT_MAX_BITS);
    println!(
        "{count} images: {} near-duplicate pairs ({} planted) in {:.2} s",
        pairs.len(),
        count / 100,
        started.elapsed().as_secs_f64()
    );
}
