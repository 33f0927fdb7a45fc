//! The same requests as tests/workloads/context_requests.c, labelled with Datadog's
//! libdd-otel-thread-ctx (OpenTelemetry thread context, OTEP 4947): at start the process
//! publishes its attribute key names (index 0 is libdatadog's datadog.local_root_span_id, then
//! endpoint = 1, tenant = 2) in the OpenTelemetry process context with libdd-library-config;
//! each request then publishes its endpoint and tenant, with a trace and span id, and allocates
//! its known mix in a function of its own. Threads 0 and 1 attach a fresh record per request and
//! detach it after (the crate's swapping model); threads 2 and 3 keep one record and update it in
//! place, to no attributes and no trace between requests (its in-place model). Between requests
//! idle_work_rs allocates with no endpoint or tenant. Usage: otel_thread_ctx_requests [REQUESTS].
//! Prints "ctx FUNCTION|ENDPOINT|TENANT SIZE COUNT" lines.
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libdd_library_config::otel_process_ctx;
use libdd_library_config::tracer_metadata::{ThreadLocalMetadata, TracerMetadata};
use libdd_otel_thread_ctx::linux::OwnedThreadContext;

const ENDPOINTS: [(&str, usize, usize); 3] = [
    ("GET /reports/export", 4096, 24),
    ("POST /orders", 512, 16),
    ("GET /health", 64, 8),
];
const TENANTS: [&str; 2] = ["acme", "globex"];
const ENDPOINT_KEY: u8 = 1;
const TENANT_KEY: u8 = 2;
const FUNCTIONS: [&str; 3] = [
    "otel_thread_ctx_requests::export_report_rs",
    "otel_thread_ctx_requests::create_order_rs",
    "otel_thread_ctx_requests::health_check_rs",
];

#[inline(never)]
fn export_report_rs(size: usize) {
    // A constant of its own: identical bodies would be folded into one function.
    black_box((Vec::<u8>::with_capacity(size), 11u32));
}

#[inline(never)]
fn create_order_rs(size: usize) {
    // A constant of its own: identical bodies would be folded into one function.
    black_box((Vec::<u8>::with_capacity(size), 12u32));
}

#[inline(never)]
fn health_check_rs(size: usize) {
    // A constant of its own: identical bodies would be folded into one function.
    black_box((Vec::<u8>::with_capacity(size), 13u32));
}

#[inline(never)]
fn idle_work_rs(size: usize) {
    // A constant of its own: identical bodies would be folded into one function.
    black_box((Vec::<u8>::with_capacity(size), 14u32));
}

fn publish_key_names() {
    let metadata = TracerMetadata {
        tracer_language: "rust".to_owned(),
        tracer_version: "0.1.0".to_owned(),
        service_name: Some("shop".to_owned()),
        threadlocal_metadata: Some(ThreadLocalMetadata {
            attribute_keys: vec!["endpoint".to_owned(), "tenant".to_owned()],
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Err(e) = otel_process_ctx::publish(&metadata.to_otel_process_ctx()) {
        eprintln!("otel_thread_ctx_requests: cannot publish the process context: {e}");
        std::process::exit(1);
    }
}

/// Ids of request r on thread n: nonzero, as the crate's documentation wants for an active trace.
fn ids(n: u64, r: usize) -> ([u8; 16], [u8; 8], [u8; 8]) {
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&(n + 1).to_be_bytes());
    trace[8..].copy_from_slice(&(r as u64 + 1).to_be_bytes());
    let span = ((n + 1) << 32 | (r as u64 + 1)).to_be_bytes();
    (trace, span, (n + 1).to_be_bytes())
}

fn main() {
    let requests: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    publish_key_names();
    // A profiler that started this program finds its context at its next look.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let made: Arc<Vec<AtomicU64>> = Arc::new((0..7).map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<_> = (0..4u64)
        .map(|n| {
            let made = made.clone();
            std::thread::spawn(move || {
                let in_place = n >= 2;
                let mut seed = n * 7919 + 1;
                for r in 0..requests {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let e = ((seed >> 33) % 3) as usize;
                    let t = r & 1;
                    let (name, size, count) = ENDPOINTS[e];
                    let (trace, span, root) = ids(n, r);
                    let attrs = [(ENDPOINT_KEY, name), (TENANT_KEY, TENANTS[t])];
                    if in_place {
                        OwnedThreadContext::update(trace, span, 1, root, &attrs);
                    } else {
                        drop(OwnedThreadContext::new(trace, span, 1, root, &attrs).attach());
                    }
                    for _ in 0..count {
                        match e {
                            0 => export_report_rs(size),
                            1 => create_order_rs(size),
                            _ => health_check_rs(size),
                        }
                    }
                    if in_place {
                        OwnedThreadContext::update([0; 16], [0; 8], 0, [0; 8], &[]);
                    } else {
                        drop(OwnedThreadContext::detach());
                    }
                    made[e * 2 + t].fetch_add(count as u64, Ordering::Relaxed);
                    for _ in 0..8 {
                        idle_work_rs(1024);
                    }
                    made[6].fetch_add(8, Ordering::Relaxed);
                }
                drop(OwnedThreadContext::detach());
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
    println!("ctx otel_thread_ctx_requests::idle_work_rs|-|- 1024 {}",
             made[6].load(Ordering::Relaxed));
}
