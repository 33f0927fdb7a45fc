/* Where a process publishes request context: the thread-local pointer of the OpenTelemetry
 * thread context (OTEP 4947, otel_thread_ctx_v1, also its earlier working name
 * custom_labels_current_set_v2) or of Polar Signals' Custom Labels ABI v1
 * (custom_labels_current_set, with custom_labels_abi_version == 1), found in the executable or
 * a shared library the process maps, turned into what the BPF program needs to find it from
 * any thread's thread pointer (struct context_tls in bpf/alloc.h).
 *
 * The executable's TLS is static: x86-64 TLS variant II puts its block right below the thread
 * pointer, so the variable sits at st_value - round_up(PT_TLS memsz, align). A library's
 * variable is reached through its TLSDESC (or initial-exec / general-dynamic) GOT slots,
 * which the dynamic loader filled when it loaded the library: for static TLS (the libraries
 * loaded at start) the descriptor's argument is the offset from the thread pointer; for
 * dynamic TLS (dlopen) it points to {module, offset}, read by the BPF program through the
 * thread's dtv. */
#ifndef ALLOCSCOPE_CONTEXT_TLS_H
#define ALLOCSCOPE_CONTEXT_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "alloc.h"

/* What was found: where, and which file publishes each ABI (for messages). */
struct context_tls_found {
	struct context_proc where; /* tls[0] OTel, tls[1] Custom Labels; kind NONE: absent */
	char files[2][256];
};

/* Files already looked through for a process and found to publish nothing, so that looking
 * again (for a library mapped since) reads only the new ones. Zero it before the first call. */
#define CONTEXT_TLS_SEEN_MAX 512
struct context_tls_seen {
	size_t count;
	struct {
		uint64_t inode;
		uint32_t dev_major, dev_minor;
	} files[CONTEXT_TLS_SEEN_MAX];
};

/* Looks through the files pid maps (those not in seen, which it adds to; seen may be NULL).
 * 0 with out filled (possibly nothing found), -ESRCH when the process is gone, -EAGAIN when a
 * library defines a variable but its GOT slot is not filled yet (try again later), other
 * -errno with a sentence in err. */
int context_tls__find(pid_t pid, struct context_tls_seen *seen, struct context_tls_found *out,
		      char *err, size_t err_len);

/* The executable's static TLS offset of a variable at st_value in a TLS segment of memsz
 * bytes aligned to align (x86-64, variant II). For the unit test. */
long long context_tls_static_offset(unsigned long long st_value, unsigned long long memsz,
				    unsigned long long align);

#endif
