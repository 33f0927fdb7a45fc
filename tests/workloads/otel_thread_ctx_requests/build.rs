// The specification has readers find otel_thread_ctx_v1 in the dynamic symbol table; an
// executable exports nothing unless told (libdatadog's FFI crate does the same for its cdylib).
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=otel_thread_ctx_v1");
}
