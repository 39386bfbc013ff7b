//! `s^65537 mod n` for RSA verification (RSAVP1, RFC 8017 §5.2.2) with Montgomery
//! multiplication on 64-bit limbs (CIOS, Koç, Acar and Kaliski 1996): 16 squarings and one
//! multiplication, where a generic `modpow` does far more work. The light client checks two
//! RSA-FDH-VRF proofs per header, so this is its hot path. Public data only: no constant-time
//! requirement.

use alloc::vec;
use alloc::vec::Vec;

/// A modulus prepared for Montgomery arithmetic.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Modulus {
    /// `n`, little-endian limbs.
    n: Vec<u64>,
    /// `-n⁻¹ mod 2⁶⁴`.
    n0inv: u64,
    /// `R² mod n` with `R = 2^(64·limbs)`, little-endian limbs.
    r2: Vec<u64>,
}

/// Big-endian bytes to little-endian limbs (`len` limbs, zero-extended).
fn limbs(be: &[u8], len: usize) -> Vec<u64> {
    let mut out = vec![0u64; len];
    for (i, chunk) in be.rchunks(8).enumerate() {
        if let Some(l) = out.get_mut(i) {
            let mut b = [0u8; 8];
            b[8 - chunk.len()..].copy_from_slice(chunk);
            *l = u64::from_be_bytes(b);
        }
    }
    out
}

/// `a >= b` for equal-length little-endian limbs.
fn geq(a: &[u64], b: &[u64]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b` (a ≥ b), equal lengths.
fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (x, y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(*y);
        let (d2, b2) = d1.overflowing_sub(borrow);
        *x = d2;
        borrow = u64::from(b1 || b2);
    }
}

impl Modulus {
    /// Prepares an odd modulus given big-endian (`n_be`) with `r2_be` = `R² mod n` big-endian
    /// (computed once by the caller with general arithmetic). `None` for an even modulus.
    pub(crate) fn new(n_be: &[u8], r2_be: &[u8]) -> Option<Self> {
        let len = n_be.len().div_ceil(8);
        let n = limbs(n_be, len);
        let n0 = *n.first()?;
        if n0 & 1 == 0 {
            return None;
        }
        // Newton's iteration for n0⁻¹ mod 2⁶⁴: each step doubles the correct low bits.
        let mut inv = 1u64;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        Some(Self {
            n,
            n0inv: inv.wrapping_neg(),
            r2: limbs(r2_be, len),
        })
    }

    /// `a·b·R⁻¹ mod n` for `a, b < n` (CIOS).
    fn mul(&self, a: &[u64], b: &[u64]) -> Vec<u64> {
        let len = self.n.len();
        let mut t = vec![0u64; len + 2];
        for &bi in b.iter().take(len) {
            let mut c: u64 = 0;
            for j in 0..len {
                let s = u128::from(t[j]) + u128::from(a[j]) * u128::from(bi) + u128::from(c);
                t[j] = s as u64;
                c = (s >> 64) as u64;
            }
            let s = u128::from(t[len]) + u128::from(c);
            t[len] = s as u64;
            t[len + 1] = (s >> 64) as u64;
            let m = t[0].wrapping_mul(self.n0inv);
            let s = u128::from(t[0]) + u128::from(m) * u128::from(self.n[0]);
            let mut c = (s >> 64) as u64;
            for j in 1..len {
                let s = u128::from(t[j]) + u128::from(m) * u128::from(self.n[j]) + u128::from(c);
                t[j - 1] = s as u64;
                c = (s >> 64) as u64;
            }
            let s = u128::from(t[len]) + u128::from(c);
            t[len - 1] = s as u64;
            t[len] = t[len + 1] + (s >> 64) as u64;
        }
        let high = t[len];
        t.truncate(len);
        if high != 0 || geq(&t, &self.n) {
            sub_in_place(&mut t, &self.n);
        }
        t
    }

    /// `s^65537 mod n` as big-endian bytes of length `k`, for `s` (big-endian) `< n`.
    pub(crate) fn pow_65537(&self, s_be: &[u8], k: usize) -> Vec<u8> {
        let len = self.n.len();
        let s = limbs(s_be, len);
        let s_m = self.mul(&s, &self.r2);
        let mut x = s_m.clone();
        for _ in 0..16 {
            x = self.mul(&x, &x);
        }
        x = self.mul(&x, &s_m);
        let mut one = vec![0u64; len];
        one[0] = 1;
        let m = self.mul(&x, &one);
        let mut out = vec![0u8; len * 8];
        for (i, l) in m.iter().enumerate() {
            let at = out.len() - 8 * (i + 1);
            out[at..at + 8].copy_from_slice(&l.to_be_bytes());
        }
        out.split_off(out.len() - k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rsa::BigUint;

    /// Against the general `modpow`, for odd moduli of several sizes (including ones whose top
    /// limb is partly used) and random bases below them.
    #[test]
    fn pow_65537_matches_modpow() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        for k in [8usize, 9, 64, 255, 256, 257, 512] {
            for _ in 0..8 {
                let mut n_be = vec![0u8; k];
                rng.fill_bytes(&mut n_be);
                n_be[0] |= 0x80;
                n_be[k - 1] |= 1;
                let n = BigUint::from_bytes_be(&n_be);
                let mut s_be = vec![0u8; k];
                rng.fill_bytes(&mut s_be);
                let s = BigUint::from_bytes_be(&s_be) % &n;
                let limbs = k.div_ceil(8);
                let r2 = (BigUint::from(1u8) << (128 * limbs)) % &n;
                let m = Modulus::new(&n_be, &r2.to_bytes_be()).expect("odd");
                let mut s_k = vec![0u8; k];
                let sb = s.to_bytes_be();
                s_k[k - sb.len()..].copy_from_slice(&sb);
                let want = s.modpow(&BigUint::from(65_537u32), &n);
                assert_eq!(
                    BigUint::from_bytes_be(&m.pow_65537(&s_k, k)),
                    want,
                    "k = {k}"
                );
            }
        }
    }

    #[test]
    fn even_modulus_is_refused() {
        assert!(Modulus::new(&[0x80, 0x02], &[1]).is_none());
        assert!(Modulus::new(&[], &[]).is_none());
    }
}
