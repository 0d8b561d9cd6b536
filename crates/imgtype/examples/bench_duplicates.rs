//! How long the near-duplicate index takes to group a catalogue's signatures:
//! `bench_duplicates [images=100000] [shared=0]`. Signatures are random (structure bits and
//! colour layout), with every hundredth image a slightly altered copy of the one before, so the
//! index has real pairs to find; `shared` more images are one photo (a placeholder filed under
//! that many products). Decoding is not included (it is per image, on all cores). Prints the
//! images, the clusters found and the seconds.

use imgtype::data::near_duplicates::{link_near_duplicates, Signature, DEFAULT_MAX_BITS};
use imgtype::data::union_find::UnionFind;
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let count = args.next().unwrap_or(100_000);
    let shared = args.next().unwrap_or(0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut signatures: Vec<Option<Signature>> = Vec::with_capacity(count + shared);
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
    let placeholder = Signature { structure: 0x5555_5555_5555_5555 >> 1, colour: [0.5; 48] };
    signatures.extend(std::iter::repeat_n(Some(placeholder), shared));
    let started = std::time::Instant::now();
    let mut links = UnionFind::new(signatures.len());
    link_near_duplicates(&signatures, DEFAULT_MAX_BITS, &mut |_, _| true, &mut links);
    let clusters = links.clusters().into_iter().filter(|c| c.len() > 1).count();
    println!(
        "{} images ({shared} of one photo): {clusters} clusters of near-duplicates ({} planted) in {:.2} s",
        signatures.len(),
        count / 100 + usize::from(shared > 1),
        started.elapsed().as_secs_f64()
    );
}
