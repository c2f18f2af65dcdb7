//! The simulator's random streams: one seed, independent streams per purpose and index,
//! so that images, electrodes, presentations and noise never share draws.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seed domains: the purposes that draw from one seed.
pub(crate) const DOMAIN_ELECTRODES: u64 = 0x5eed_0001;
pub(crate) const DOMAIN_PRESENTATIONS: u64 = 0x5eed_0002;
pub(crate) const DOMAIN_NOISE: u64 = 0x5eed_0003;
pub(crate) const DOMAIN_DESIGN: u64 = 0x5eed_0004;
pub(crate) const DOMAIN_JITTER: u64 = 0x5eed_0005;
pub(crate) const DOMAIN_REFERENCE: u64 = 0x5eed_0006;
pub(crate) const DOMAIN_BROADBAND: u64 = 0x5eed_0007;
pub(crate) const DOMAIN_VENTRAL: u64 = 0x5eed_0008;
pub(crate) const DOMAIN_DAYS: u64 = 0x5eed_0009;

/// One standard normal draw. rand_distr draws an f32 one as this, rounded.
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
}

/// A generator for one purpose and index.
pub(crate) fn rng(seed: u64, domain: u64, index: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ domain.rotate_left(32));
    r.set_stream(index);
    r
}
