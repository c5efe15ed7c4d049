//! Per-call memory accounting.
//!
//! The cap counts every linear memory of the instance together: a per-memory cap would let
//! a component with several memories use a multiple of it.

use wasmtime::ResourceLimiter;

/// Raised (as the trap's error) when a call would grow memory past its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("memory cap of {cap} bytes exceeded (asked for {requested} bytes in total)")]
pub struct MemoryCapExceeded {
    pub cap: usize,
    pub requested: usize,
}

#[derive(Debug)]
pub struct MemoryLimiter {
    cap: usize,
    used: usize,
    hit: bool,
}

/// Enough table slots for any reasonable component (Python's run to tens of thousands).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryLimiter {
    pub fn new(cap: usize) -> Self {
        MemoryLimiter { cap, used: 0, hit: false }
    }

    /// Whether this call ran into its cap.
    pub fn hit(&self) -> bool {
        self.hit
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let requested = self.used.saturating_add(desired.saturating_sub(current));
        if requested > self.cap {
            self.hit = true;
            // An error (not `Ok(false)`) traps at once with a cause we can report, instead
            // of letting the guest's allocator turn the failure into an anonymous abort.
            return Err(wasmtime::Error::new(MemoryCapExceeded { cap: self.cap, requested }));
        }
        self.used = requested;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_summed_across_memories() {
        let mut l = MemoryLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        // A second memory of 60 would pass a per-memory cap but not the per-call one.
        assert!(l.memory_growing(0, 60, None).is_err());
        assert!(l.hit());
    }

    #[test]
    fn growth_up_to_the_cap_is_allowed() {
        let mut l = MemoryLimiter::new(100);
        assert!(l.memory_growing(0, 50, None).unwrap());
        assert!(l.memory_growing(50, 100, None).unwrap());
        assert!(!l.hit());
    }
}
