//! The same requests as tests/workloads/context_requests.c, labelled with the custom-labels
//! crate: each request runs inside `with_labels([("endpoint", ..), ("tenant", ..)])` and
//! allocates its known mix in a function of its own; between requests, idle_work allocates
//! with no labels. Usage: custom_labels_requests [REQUESTS]. Prints "ctx FUNCTION|ENDPOINT|TENANT SIZE COUNT" lines.
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const ENDPOINTS: [(&str, usize, usize); 3] = [
    ("GET /reports/export", 4096, 24),
    ("POST /orders", 512, 16),
    ("GET /health", 64, 8),
];
const TENANTS: [&str; 2] = ["acme", "globex"];
const FUNCTIONS: [&str; 3] = [
    "custom_labels_requests::export_report_rs",
    "custom_labels_requests::create_order_rs",
    "custom_labels_requests::health_check_rs",
];

#[inline(never)]
fn export_report_rs(size: usize) {
    // A constant of its own: identical bodies would be folded into one function.
    black_box((Vec::<u8>::with_capacity(size), 1u32));
}

#[inline(never)]
fn create_order_rs(size: usize) {
    // A constant of its own: identical bodies would be folded into one function.
    black_box((Vec::<u8>::with_capacity(size), 2u32));
}

#[inline(never)]
fn health_check_rs(size: usize) {
    // A constant of its own: identical bodies would be folded into one function.
    black_box((Vec::<u8>::with_capacity(size), 3u32));
}

#[inline(never)]
fn idle_work_rs(size: usize) {
    // A constant of its own: identical bodies would be folded into one function.
    black_box((Vec::<u8>::with_capacity(size), 4u32));
}

fn main() {
    let requests: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    // A profiler that started this program finds its labels' TLS variable at its next look.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let made: Arc<Vec<AtomicU64>> = Arc::new((0..7).map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<_> = (0..4u64)
        .map(|n| {
            let made = made.clone();
            std::thread::spawn(move || {
                let mut seed = n * 7919 + 1;
                for r in 0..requests {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let e = ((seed >> 33) % 3) as usize;
                    let t = r & 1;
                    let (name, size, count) = ENDPOINTS[e];
                    custom_labels::with_labels([("endpoint", name), ("tenant", TENANTS[t])], || {
                        for _ in 0..count {
                            match e {
                                0 => export_report_rs(size),
                                1 => create_order_rs(size),
                                _ => health_check_rs(size),
                            }
                        }
                    });
                    made[e * 2 + t].fetch_add(count as u64, Ordering::Relaxed);
                    for _ in 0..8 {
                        idle_work_rs(1024);
                    }
                    made[6].fetch_add(8, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (e, (name, size, _)) in ENDPOINTS.iter().enumerate() {
        for (t, tenant) in TENANTS.iter().enumerate() {
            println!("ctx {}|{}|{} {} {}", FUNCTIONS[e], name, tenant, size,
                     made[e * 2 + t].load(Ordering::Relaxed));
        }
    }
    println!("ctx custom_labels_requests::idle_work_rs|-|- 1024 {}", made[6].load(Ordering::Relaxed));
}
