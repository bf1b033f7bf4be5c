//! The hasher of the layers' per-host tables.

use std::hash::{BuildHasherDefault, Hasher};

/// `FxHash` (as in rustc): one multiply per 8 bytes. A host name is a few
/// words, so hashing one costs a few nanoseconds where std's `SipHash`
/// costs tens, on every call that looks its host up.
///
/// Not resistant to chosen keys, which is fine for the tables it serves:
/// their keys are the hosts this client itself calls, and every such table
/// is bounded or swept. Not for maps keyed by what a server sends.
///
/// ```
/// use std::collections::HashMap;
/// use parapet_core::HostHashBuilder;
///
/// let mut per_host: HashMap<&str, u32, HostHashBuilder> = HashMap::default();
/// *per_host.entry("api.example.com:443").or_default() += 1;
/// assert_eq!(per_host["api.example.com:443"], 1);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct HostHasher {
    hash: u64,
}

/// Builds [`HostHasher`]s, for `HashMap::with_hasher` / `HashMap::default`.
pub type HostHashBuilder = BuildHasherDefault<HostHasher>;

impl HostHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for HostHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some((word, tail)) = rest.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*word));
            rest = tail;
        }
        // The last 0 to 7 bytes, with the length in the top byte, so that
        // trailing zero bytes change the hash.
        let mut last = [0u8; 8];
        if let Some(head) = last.get_mut(..rest.len()) {
            head.copy_from_slice(rest);
        }
        self.add(u64::from_le_bytes(last) ^ (bytes.len() as u64) << 56);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply mixes upwards: fold the high bits down so that a
        // table's bucket index (low bits) sees every input byte.
        self.hash ^ (self.hash >> 32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn similar_hosts_spread_over_the_low_bits() {
        let b = HostHashBuilder::default();
        // 1000 hosts that differ in one digit or in their port: the low 10
        // bits (a 1024-bucket table) take most distinct values.
        let low: HashSet<u64> = (0..1000)
            .map(|i| b.hash_one(format!("host{i}.example.com:{}", 8000 + i % 7)) & 0x3ff)
            .collect();
        assert!(low.len() > 550, "{}", low.len());
        assert_ne!(b.hash_one("a:80"), b.hash_one("a:81"));
    }

    #[test]
    fn every_byte_counts_trailing_zeros_too() {
        let h = |bytes: &[u8]| {
            let mut s = HostHasher::default();
            s.write(bytes);
            s.finish()
        };
        assert_ne!(h(b"a"), h(b"a\0"));
        assert_ne!(h(b"abcdefgh1"), h(b"abcdefgh2"));
        assert_ne!(h(b""), h(b"\0"));
        assert_ne!(h(b"abcdefgh"), h(b"abcdefgh\0"));
    }
}
