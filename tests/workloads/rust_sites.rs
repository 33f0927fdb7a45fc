//! Rust allocation sites with known totals, built at test time by tests/e2e (rustc -O -g, no
//! frame pointers, the system allocator; once with each symbol mangling). Each site prints
//! "site LABEL SIZE COUNT"; the test knows the function name each label must show as, which
//! differs between manglings (v0 names instantiated generics: `<rust_sites::Ledger<u64>>`).
//!
//!   rust_sites [--scale N]
//! Built with `--cfg rjem` and linked with build/workloads/librjem.a, the global allocator is
//! jemalloc under the `_rjem_` prefix, as tikv-jemallocator builds it (without its crate).
#[cfg(not(rjem))]
#[global_allocator]
static ALLOCATOR: std::alloc::System = std::alloc::System;

#[cfg(rjem)]
#[global_allocator]
static ALLOCATOR: rjem::Rjem = rjem::Rjem;

#[cfg(rjem)]
mod rjem {
    use std::alloc::{GlobalAlloc, Layout};

    extern "C" {
        fn _rjem_malloc(size: usize) -> *mut u8;
        fn _rjem_calloc(count: usize, size: usize) -> *mut u8;
        fn _rjem_realloc(pointer: *mut u8, size: usize) -> *mut u8;
        fn _rjem_aligned_alloc(alignment: usize, size: usize) -> *mut u8;
        fn _rjem_free(pointer: *mut u8);
    }

    /// jemalloc's malloc aligns to 16; larger alignments go through aligned_alloc.
    const MALLOC_ALIGNMENT: usize = 16;

    pub struct Rjem;

    unsafe impl GlobalAlloc for Rjem {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= MALLOC_ALIGNMENT {
                _rjem_malloc(layout.size())
            } else {
                _rjem_aligned_alloc(layout.align(), layout.size())
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= MALLOC_ALIGNMENT {
                _rjem_calloc(1, layout.size())
            } else {
                let pointer = self.alloc(layout);
                if !pointer.is_null() {
                    std::ptr::write_bytes(pointer, 0, layout.size());
                }
                pointer
            }
        }

        unsafe fn dealloc(&self, pointer: *mut u8, _layout: Layout) {
            _rjem_free(pointer)
        }

        unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            if layout.align() <= MALLOC_ALIGNMENT {
                return _rjem_realloc(pointer, size);
            }
            let grown = self.alloc(Layout::from_size_align_unchecked(size, layout.align()));
            if !grown.is_null() {
                std::ptr::copy_nonoverlapping(pointer, grown, layout.size().min(size));
                self.dealloc(pointer, layout);
            }
            grown
        }
    }
}

/// A volatile write into the block, so the compiler cannot drop the allocation
/// (std::hint::black_box needs Rust 1.66, Debian 12's rustc is 1.63; LLVM removes an
/// allocation even when its pointer is published to a static).
fn keep<T>(pointer: *mut T) {
    unsafe { std::ptr::write_volatile(pointer as *mut u8, 1) };
}

fn manifest(label: &str, size: usize, count: usize) {
    println!("site {} {} {}", label, size, count);
}

mod fidelity {
    /// A plain function in a module: `rust_sites::fidelity::site`.
    #[inline(never)]
    pub fn site(n: usize) {
        for _ in 0..n {
            let mut buffer: Vec<u8> = Vec::with_capacity(4096);
            super::keep(buffer.as_mut_ptr());
        }
        super::manifest("fidelity_site", 4096, n);
    }
}

/// A method of a generic type: legacy names keep the parameter (`Ledger<T>::record`), v0
/// names the instance (`<rust_sites::Ledger<u64>>::record`).
pub struct Ledger<T> {
    entries: Vec<T>,
}

impl<T: Clone + Default> Ledger<T> {
    #[inline(never)]
    pub fn record(&mut self, n: usize) {
        for _ in 0..n {
            self.entries = vec![T::default(); 640];
            keep(self.entries.as_mut_ptr());
        }
        manifest("ledger_record", 640 * std::mem::size_of::<T>(), n);
    }
}

/// Runs f n times; the closure given to it is a frame of its own name (inlined or not).
#[inline(never)]
fn each<F: FnMut(usize)>(n: usize, mut f: F) {
    for i in 0..n {
        f(i);
    }
}

/// Growth through realloc inside the standard library (`alloc::raw_vec::...finish_grow`).
#[inline(never)]
fn grow(n: usize) {
    for _ in 0..n {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..2048u64 {
            v.push(i);
        }
        keep(v.as_mut_ptr());
    }
}

fn main() {
    let mut scale = 1usize;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--scale" && i + 1 < args.len() {
            scale = args[i + 1].parse().unwrap_or(1);
            i += 2;
        } else {
            eprintln!("usage: {} [--scale N]", args[0]);
            std::process::exit(2);
        }
    }
    fidelity::site(4000 * scale);
    let mut ledger = Ledger::<u64> { entries: Vec::new() };
    ledger.record(3000 * scale);
    let n = 4000 * scale;
    each(n, |i| {
        let mut block = Box::new([i as u8; 3000]);
        keep(block.as_mut_ptr());
    });
    manifest("main_closure", 3000, n);
    grow(200 * scale);
    println!("done");
}
