//! A compact owned byte string for keys, members and values.
//!
//! Most keys and values in real workloads are short. [`ShortBytes`] keeps up
//! to [`INLINE_CAPACITY`] bytes inside its own 24 bytes and moves longer ones
//! to an exact-size heap allocation, so a 16-byte key costs no allocation at
//! all. The representation is canonical (inline if and only if it fits), so
//! equality and hashing can work on content.

use core::borrow::Borrow;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::Deref;

/// Bytes that fit inline.
pub const INLINE_CAPACITY: usize = 22;

/// An immutable byte string stored inline when short.
#[derive(Clone)]
pub struct ShortBytes(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, data: [u8; INLINE_CAPACITY] },
    Heap(Box<[u8]>),
}

impl ShortBytes {
    /// The empty string.
    pub const EMPTY: ShortBytes = ShortBytes(Repr::Inline { len: 0, data: [0; INLINE_CAPACITY] });

    /// Copies `bytes`.
    #[inline]
    pub fn new(bytes: &[u8]) -> ShortBytes {
        if bytes.len() <= INLINE_CAPACITY {
            let mut data = [0u8; INLINE_CAPACITY];
            data[..bytes.len()].copy_from_slice(bytes);
            ShortBytes(Repr::Inline { len: bytes.len() as u8, data })
        } else {
            ShortBytes(Repr::Heap(bytes.into()))
        }
    }

    /// Takes ownership of a vector (no copy when it is long).
    pub fn from_vec(bytes: Vec<u8>) -> ShortBytes {
        if bytes.len() <= INLINE_CAPACITY {
            ShortBytes::new(&bytes)
        } else {
            ShortBytes(Repr::Heap(bytes.into_boxed_slice()))
        }
    }

    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, data } => &data[..*len as usize],
            Repr::Heap(boxed) => boxed,
        }
    }

    /// Heap bytes owned beyond `size_of::<ShortBytes>()`.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => 0,
            Repr::Heap(boxed) => boxed.len(),
        }
    }
}

impl Default for ShortBytes {
    fn default() -> Self {
        ShortBytes::EMPTY
    }
}

impl Deref for ShortBytes {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for ShortBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for ShortBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for ShortBytes {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ShortBytes {}

impl PartialOrd for ShortBytes {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortBytes {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl Hash for ShortBytes {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly as `[u8]` does, so `Borrow<[u8]>` lookups work.
        self.as_slice().hash(state)
    }
}

impl From<&[u8]> for ShortBytes {
    fn from(bytes: &[u8]) -> Self {
        ShortBytes::new(bytes)
    }
}

impl From<&str> for ShortBytes {
    fn from(text: &str) -> Self {
        ShortBytes::new(text.as_bytes())
    }
}

impl fmt::Debug for ShortBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.as_slice().escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_bytes_is_24_bytes_and_inline_up_to_capacity() {
        assert_eq!(core::mem::size_of::<ShortBytes>(), 24);
        let short = ShortBytes::new(&[7; INLINE_CAPACITY]);
        assert_eq!(short.heap_bytes(), 0);
        let long = ShortBytes::new(&[7; INLINE_CAPACITY + 1]);
        assert_eq!(long.heap_bytes(), INLINE_CAPACITY + 1);
        assert_eq!(&*long, &[7; INLINE_CAPACITY + 1][..]);
        assert_eq!(ShortBytes::from_vec(vec![1, 2]), ShortBytes::new(&[1, 2]));
        assert!(ShortBytes::from("a") < ShortBytes::from("b"));
    }
}
