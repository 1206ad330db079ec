//! Shims for the BPF verifier: code shapes that compile to what it can follow, with a plain
//! host equivalent so the same logic runs in tests.

/// Hides `v` from the optimizer.
///
/// A bounds check on a length taken from the packet (an IP total length, say) lets LLVM
/// prove later constant-size checks redundant and delete them; the verifier cannot follow
/// that proof and rejects the unchecked access. Checking through an opaque copy keeps
/// the check and breaks the inference. Costs one stack slot and two instructions.
#[inline(always)]
pub fn opaque(v: usize) -> usize {
    // SAFETY: `&v` points to a live, aligned, initialised local for the whole read.
    unsafe { core::ptr::read_volatile(&v) }
}

/// `v` if it is at most `max`, as a value the verifier knows nothing of but that bound.
///
/// The dissector ends at one of several offsets (0 to 2 VLAN tags, IPv4 options, IPv6
/// extension headers); the verifier, which tracks constants exactly, would then walk the
/// rest of the program once per offset, since states with different constants do not
/// prune each other. Passed through stack bytes it cannot track (byte stores of a
/// register, read back as one word), every offset becomes the same bounded unknown, and
/// the paths after it merge. On the host it is just the bound check.
#[inline(always)]
pub fn widen(v: usize, max: usize) -> Option<usize> {
    #[cfg(target_arch = "bpf")]
    let v = {
        #[repr(align(8))]
        struct Word([u8; 8]);
        let mut b = Word([0; 8]);
        let w = v as u64;
        let mut i = 0;
        while i < 8 {
            // SAFETY: `b` is a live local and `i < 8`.
            unsafe { core::ptr::write_volatile(&mut b.0[i], (w >> (8 * i)) as u8) };
            i += 1;
        }
        // SAFETY: `b` is a live, initialised, 8-aligned 8-byte local, read as one word.
        unsafe { core::ptr::read_volatile(b.0.as_ptr() as *const u64) as usize }
    };
    if v > max { None } else { Some(v) }
}

/// One step of a bounded loop; `false` stops the loop.
pub trait Step {
    /// `index` counts the steps from 0.
    fn step(&mut self, index: u32) -> bool;
}

/// Runs `s.step(0)`, `s.step(1)`, ... at most `n` times, until one returns `false`.
///
/// Compiled for BPF this is the `bpf_loop` helper (kernel 5.17+): the verifier checks the
/// step as a callback instead of walking `n` inlined copies along every path through the
/// rest of the program, which for the 40-byte TCP options walk blows through its
/// one-million-instruction budget. On the host it is a plain loop over the same step.
#[inline(always)]
pub fn bounded_loop<S: Step>(n: u32, s: &mut S) {
    #[cfg(target_arch = "bpf")]
    {
        use core::ffi::c_void;
        /// The callback: one step over the state `ctx` points to; 1 stops the loop.
        unsafe extern "C" fn step<S: Step>(index: u32, ctx: *mut c_void) -> i64 {
            // SAFETY: `ctx` is the `&mut S` handed to bpf_loop below, live for the call.
            if unsafe { (*(ctx as *mut S)).step(index) } {
                0
            } else {
                1
            }
        }
        type BpfLoop = unsafe extern "C" fn(u32, *mut c_void, *mut c_void, u64) -> i64;
        // SAFETY: in BPF a call to the address N is the call of helper N, which is how
        // aya-ebpf's helper bindings call them too; 181 is bpf_loop, and this is its
        // signature. It calls `step::<S>` at most `n` times with `s`, which is a live
        // `&mut S` that nothing else uses until bpf_loop returns; the verifier checks the
        // callback itself.
        unsafe {
            let bpf_loop: BpfLoop = core::mem::transmute(181usize);
            bpf_loop(n, step::<S> as *mut c_void, s as *mut S as *mut c_void, 0);
        }
    }
    #[cfg(not(target_arch = "bpf"))]
    for i in 0..n {
        if !s.step(i) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the indexes it is called with and stops after `stop_after` calls.
    struct Counter {
        seen: Vec<u32>,
        stop_after: usize,
    }

    impl Step for Counter {
        fn step(&mut self, index: u32) -> bool {
            self.seen.push(index);
            self.seen.len() < self.stop_after
        }
    }

    #[test]
    fn bounded_loop_indexes_and_stops() {
        let mut c = Counter {
            seen: vec![],
            stop_after: 3,
        };
        bounded_loop(10, &mut c);
        assert_eq!(c.seen, [0, 1, 2], "stops at the first false");
        let mut c = Counter {
            seen: vec![],
            stop_after: 100,
        };
        bounded_loop(4, &mut c);
        assert_eq!(c.seen, [0, 1, 2, 3], "never more than n steps");
        let mut c = Counter {
            seen: vec![],
            stop_after: 100,
        };
        bounded_loop(0, &mut c);
        assert!(c.seen.is_empty());
    }

    #[test]
    fn opaque_is_identity() {
        for v in [0, 1, 40, usize::MAX] {
            assert_eq!(opaque(v), v);
        }
    }
}
