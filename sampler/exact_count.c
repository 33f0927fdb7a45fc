/* liballocscope-count.so's exact counting: every allocation the program makes, counted in the
 * process by call site, for `allocscope count` and `allocscope gate` (docs/ci-gate.md).
 *
 * Compiled only with -DALLOCSCOPE_EXACT_COUNT (the Makefile builds allocscope_sampler.c and
 * this file a second time for liballocscope-count.so); in liballocscope-sampler.so this file
 * is empty and the entry points' hook (exact_count.h) compiles to nothing.
 *
 * Hot path, per allocation: a per-thread counter (allocs_per_run, allocscope_count.h), a key
 * made of the return address into the caller (the site) and the caller chain read through at
 * most CHAIN_DEPTH saved frame pointers, then one lookup in a lock-free open-addressed table
 * and two relaxed atomic adds. No unwinding: the first allocation of each new key unwinds its
 * stack once (libgcc's unwinder, CFI, frame pointers not needed) and that stack stands for
 * every later allocation of the key. So site counts are exact; per-function inclusive totals
 * are exact as long as the frame-pointer chain tells the site's callers apart (see
 * docs/ci-gate.md: code without frame pointers merges callers beyond its frames into the
 * first one seen).
 *
 * Sites inside the allocator's own library (libc's strdup, fopen, getline calling malloc):
 * that library has no frame pointers, so the return address into its caller is in neither
 * the site nor the chain. At a fixed return address in a function that keeps no frame
 * pointer, the function's CFA is the callee's CFA plus a constant, and the register rbp
 * (the caller's frame pointer) is either untouched or saved at a constant distance below that
 * CFA. Both constants are learned once per return address from one unwinding (the unwinder's
 * CFA and rbp of each frame, from the CFI), then the caller's return address is read directly
 * from the stack on every later call: a few loads per allocator frame instead of an unwinding.
 * A frame that keeps rbp as its frame pointer (alloca, stack realignment: its CFA moves with
 * rsp) or a signal frame is refused and its allocations unwound one by one as before. Every
 * new key is checked against a full unwinding before it is published, and each key again at
 * its 1st, 2nd, 4th, 8th... allocation: a mismatch refuses the return addresses involved.
 *
 * The frame-pointer walk reads only inside this thread's stack (bounds from
 * pthread_getattr_np, once per thread), increasing, 8-byte aligned: a frame pointer that is
 * really a data register ends the walk instead of faulting.
 *
 * C++: operator new and new[] (all eight variants) are interposed here as well, so that their
 * caller is the site (libstdc++ has no frame pointers: the site would otherwise be inside
 * operator new for every new in the program); the malloc they call is then not counted again.
 *
 * At exit (a destructor) the table is written to $ALLOCSCOPE_COUNT_DIR/<pid>-<n>.count, with
 * the process's /proc/self/maps so that allocscope symbolizes it after the process is gone.
 * A forked child starts from zero and writes its own file; a program started by exec is
 * counted from its start; a process that ends with _exit (shells do) writes its file there.
 * Lost: what a process allocates after fork and before exec, and the counts of a process
 * killed by a signal or ending in a raw exit_group syscall. Allocations made by this library
 * itself (unwinding, writing) are never counted: a per-thread busy flag sends them straight
 * through. The file also names the next allocator's malloc ("leaf"): allocscope puts it at
 * the leaf of every stack, so that sites are named as the kernel path names them (a libc
 * function that allocates, such as fopen or strdup, is not the site; its caller is). */
#ifdef ALLOCSCOPE_EXACT_COUNT
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>
#include <sys/syscall.h>

#include "allocscope_count.h"
#include "exact_count.h"

#define EXPORT	    __attribute__((visibility("default")))
#define THREAD_IE   __thread __attribute__((tls_model("initial-exec")))
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

#define CHAIN_DEPTH 8	     /* caller frames in a key */
#define MAX_FRAMES  64	     /* frames kept per key's stack */
#define MAX_KEYS    16384    /* distinct (site, chain) keys; more go to "unattributed" */
#define INDEX_SLOTS (2 * MAX_KEYS)
#define SLOT_FULL   UINT32_MAX
#define TRACE_MAX   (MAX_FRAMES + 8)  /* frames of one unwinding */
#define RULE_SLOTS  4096	      /* return addresses inside the allocator's library */
#define LIB_DEPTH   8		      /* allocator frames followed from the rules */
#define RULE_KNOWN  (1ull << 63)
#define RULE_REFUSE (1ull << 62)      /* unwound per allocation */
#define MAX_DELTA   (1u << 20)	      /* a frame's size */
#define LIB_SEED    0xa110ca7e5eedull /* keys of allocator sites, apart from the others */

struct count_entry {
	uint64_t objects, bytes; /* relaxed atomics */
	uint64_t site;
	uint32_t n_frames;
	uint32_t ready; /* frames[] filled (release) */
	uint64_t frames[MAX_FRAMES];
};

struct index_slot {
	uint64_t key;
	uint32_t entry; /* index + 1; 0 while being published; SLOT_FULL: no entry left */
};

/* What one return address inside the allocator's library says about its frame: RULE_KNOWN,
 * the frame's CFA minus its callee's CFA (bits 0-31), where the caller's rbp is saved (bits
 * 32-47: bytes below the CFA; 0: rbp is untouched); or RULE_REFUSE. 0: not learned yet. */
struct rule_slot {
	uint64_t pc;
	uint64_t rule;
};

/* One unwinding: per frame from the innermost out, the register state a return to it finds:
 * the return address (the IP), rsp (the CFA of the frame it returns from: libgcc's
 * _Unwind_GetCFA) and rbp. The frame's own CFA is therefore cfa[k + 1]. */
struct unwound {
	int n;
	uintptr_t ip[TRACE_MAX], cfa[TRACE_MAX], rbp[TRACE_MAX];
	bool signal_frame[TRACE_MAX];
};

/* The frames of an allocator site read through the rules: the return addresses out of the
 * allocator's library (the last one is its caller's), the caller's rbp, and the key. */
struct lib_walk {
	int n;
	uintptr_t ret[LIB_DEPTH];
	uintptr_t rbp;
	uint64_t key;
};

static struct count_entry entries[MAX_KEYS];
static struct index_slot slots[INDEX_SLOTS];
static struct rule_slot rules[RULE_SLOTS];
static uintptr_t lib_text_lo, lib_text_hi; /* the allocator's library's code */
static uint32_t n_entries;
static uint64_t unattributed_objects, unattributed_bytes;
static bool started;
/* The process the table belongs to: set at start and in a forked child. A vfork child (or a
 * raw clone) shares the parent's table without the fork handler running: it must not write
 * it as its own. */
static pid_t owner_pid;
static uintptr_t next_malloc_pc; /* the next allocator's malloc, for the file's "leaf" */

static THREAD_IE bool busy;   /* this library's own allocations: not counted */
static THREAD_IE bool in_new; /* inside a counted operator new: its malloc is not counted */
static THREAD_IE uint64_t thread_objects, thread_bytes;
static THREAD_IE uintptr_t stack_hi, stack_lo;
static THREAD_IE bool stack_known;

static inline uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
	h ^= h >> 31;
	h *= 0xbf58476d1ce4e5b9ull;
	return h ^ (h >> 29);
}

/* The top of this thread's stack, or 0 when unknown (then keys carry no caller chain). */
static uintptr_t thread_stack_top(void)
{
	pthread_attr_t attr;
	void *addr = NULL;
	size_t size = 0;

	bool was_busy = busy;

	if (stack_known)
		return stack_hi;
	busy = true; /* pthread_getattr_np allocates (the cpuset; the main thread reads maps) */
	if (pthread_getattr_np(pthread_self(), &attr) == 0) {
		if (pthread_attr_getstack(&attr, &addr, &size) == 0 && addr) {
			stack_lo = (uintptr_t)addr;
			stack_hi = (uintptr_t)addr + size;
		}
		pthread_attr_destroy(&attr);
	}
	busy = was_busy;
	stack_known = true;
	return stack_hi;
}

/* The site and the return addresses of up to CHAIN_DEPTH callers, read through saved frame
 * pointers: frame is the entry point's frame, whose first word is its caller's frame pointer. */
static inline uint64_t chain_walk(uint64_t key, uintptr_t fp, uintptr_t lo, uintptr_t hi)
{
	for (int depth = 0; depth < CHAIN_DEPTH; depth++) {
		uintptr_t next;

		if (fp <= lo || fp > hi - 16 || (fp & 7))
			break;
		key = mix(key, ((const uintptr_t *)fp)[1]);
		next = ((const uintptr_t *)fp)[0];
		if (next <= fp)
			break;
		fp = next;
	}
	return key ? key : 1;
}

static inline uint64_t chain_key(uintptr_t site, void *frame)
{
	uintptr_t lo = (uintptr_t)__builtin_frame_address(0), hi = thread_stack_top();
	uint64_t key = mix(0, site);

	if (!frame || !hi || (uintptr_t)frame <= lo || (uintptr_t)frame > hi - 16 ||
	    (uintptr_t)frame < stack_lo)
		return key ? key : 1;
	return chain_walk(key, *(const uintptr_t *)frame, lo, hi);
}

static inline bool in_allocator_library(uintptr_t pc)
{
	return pc >= lib_text_lo && pc < lib_text_hi;
}

/* The position of site in u (from 1), or u->n when the unwinder did not reach it. */
static int site_index(const struct unwound *u, uintptr_t site)
{
	int i;

	for (i = 1; i < u->n; i++)
		if (u->ip[i] == site)
			break;
	return i;
}

static _Unwind_Reason_Code unwind_step(struct _Unwind_Context *ctx, void *arg)
{
	struct unwound *u = arg;
	int before = 0;

	if (u->n >= TRACE_MAX)
		return _URC_END_OF_STACK;
	u->ip[u->n] = _Unwind_GetIPInfo(ctx, &before);
	u->signal_frame[u->n] = before;
	u->cfa[u->n] = _Unwind_GetCFA(ctx);
	u->rbp[u->n] = _Unwind_GetGR(ctx, 6); /* DWARF register 6: rbp */
	u->n++;
	return _URC_NO_REASON;
}

/* Unwinds this thread's stack from here (the CFI, through libgcc's unwinder). */
static __attribute__((noinline)) void unwind_now(struct unwound *u)
{
	bool was_busy = busy;

	busy = true; /* the unwinder may allocate (its first call, dl_iterate_phdr) */
	u->n = 0;
	_Unwind_Backtrace(unwind_step, u);
	busy = was_busy;
}

/* Fills e's stack, once, for a new key: from u when the caller unwound already, else
 * unwinding now. The frames from the entry point (leaf) out. */
static __attribute__((noinline)) void capture_stack(struct count_entry *e, uintptr_t site,
						    const struct unwound *given)
{
	struct unwound own;
	const struct unwound *u = given;
	uint32_t kept = 0;
	int i;

	if (!u) {
		unwind_now(&own);
		u = &own;
	}
	i = site_index(u, site);
	if (i < u->n) {
		for (int k = i - 1; k < u->n && kept < MAX_FRAMES; k++)
			e->frames[kept++] = u->ip[k];
	} else {
		/* The unwinder did not reach the site: the entry point and the site alone. */
		e->frames[kept++] = (uint64_t)(uintptr_t)exact_count_alloc;
		e->frames[kept++] = site;
	}
	e->n_frames = kept;
	__atomic_store_n(&e->ready, 1, __ATOMIC_RELEASE);
}

/* The entry a slot leads to, waiting out the two stores of its publication; NULL when the
 * table is full or the publisher never finished (it was in the parent of a fork). */
static struct count_entry *slot_entry(struct index_slot *slot)
{
	for (int spins = 0; spins < 4096; spins++) {
		uint32_t entry = __atomic_load_n(&slot->entry, __ATOMIC_ACQUIRE);

		if (entry == SLOT_FULL)
			return NULL;
		if (entry)
			return &entries[entry - 1];
		if (spins > 64)
			sched_yield();
	}
	return NULL;
}

/* The entry of key when it exists already, else NULL. */
static struct count_entry *lookup_entry(uint64_t key)
{
	size_t i = key & (INDEX_SLOTS - 1);

	for (size_t probe = 0; probe < INDEX_SLOTS; probe++, i = (i + 1) & (INDEX_SLOTS - 1)) {
		uint64_t found = __atomic_load_n(&slots[i].key, __ATOMIC_ACQUIRE);

		if (found == key)
			return slot_entry(&slots[i]);
		if (!found)
			return NULL;
	}
	return NULL;
}

/* The entry of key, made when new (its stack from u, or unwound now when u is NULL); NULL
 * when the table is full. */
static struct count_entry *find_entry(uint64_t key, uintptr_t site, const struct unwound *u)
{
	size_t i = key & (INDEX_SLOTS - 1);

	for (size_t probe = 0; probe < INDEX_SLOTS; probe++, i = (i + 1) & (INDEX_SLOTS - 1)) {
		struct index_slot *slot = &slots[i];
		uint64_t found = __atomic_load_n(&slot->key, __ATOMIC_ACQUIRE);
		struct count_entry *e;
		uint32_t index;

		if (found == key)
			return slot_entry(slot);
		if (found)
			continue;
		if (__atomic_load_n(&n_entries, __ATOMIC_RELAXED) >= MAX_KEYS)
			return NULL;
		if (!__atomic_compare_exchange_n(&slot->key, &found, key, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE)) {
			if (found == key)
				return slot_entry(slot);
			continue;
		}
		index = __atomic_fetch_add(&n_entries, 1, __ATOMIC_RELAXED);
		if (index >= MAX_KEYS) {
			__atomic_store_n(&slot->entry, SLOT_FULL, __ATOMIC_RELEASE);
			return NULL;
		}
		e = &entries[index];
		e->site = site;
		__atomic_store_n(&slot->entry, index + 1, __ATOMIC_RELEASE);
		capture_stack(e, site, u);
		return e;
	}
	return NULL;
}

/* ---- Sites inside the allocator's library: the rules of its frames ---- */

static struct rule_slot *rule_slot(uintptr_t pc, bool add)
{
	size_t i = mix(0, pc) & (RULE_SLOTS - 1);

	for (size_t probe = 0; probe < RULE_SLOTS; probe++, i = (i + 1) & (RULE_SLOTS - 1)) {
		uint64_t found = __atomic_load_n(&rules[i].pc, __ATOMIC_ACQUIRE);

		if (found == pc)
			return &rules[i];
		if (found)
			continue;
		if (!add)
			return NULL;
		if (__atomic_compare_exchange_n(&rules[i].pc, &found, pc, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE) ||
		    found == pc)
			return &rules[i];
	}
	return NULL; /* full: this return address is learned again on every call */
}

static inline uint64_t rule_of(uintptr_t pc)
{
	struct rule_slot *slot = rule_slot(pc, false);

	return slot ? __atomic_load_n(&slot->rule, __ATOMIC_ACQUIRE) : 0;
}

/* A refusal is final: a rule learned later by another thread does not undo it. */
static void rule_set(uintptr_t pc, uint64_t rule)
{
	struct rule_slot *slot = rule_slot(pc, true);
	uint64_t old;

	if (!slot)
		return;
	old = __atomic_load_n(&slot->rule, __ATOMIC_ACQUIRE);
	do {
		if (old & RULE_REFUSE)
			return;
	} while (!__atomic_compare_exchange_n(&slot->rule, &old, rule, false, __ATOMIC_ACQ_REL,
					      __ATOMIC_ACQUIRE));
}

/* The allocator frames of the site through their rules, reading only inside this thread's
 * stack above frame (the entry point's frame: its caller's CFA is frame + 16). False when a
 * return address has no usable rule (not learned yet, or refused). */
static bool lib_walk(uintptr_t site, void *frame, struct lib_walk *w)
{
	uintptr_t lo = (uintptr_t)frame, hi = thread_stack_top();
	uintptr_t cfa = lo + 16, pc = site, rbp;

	/* Not on this thread's stack (a signal handler on an alternate stack): no walk. */
	if (!frame || !hi || lo < stack_lo || lo <= (uintptr_t)__builtin_frame_address(0) ||
	    cfa > hi)
		return false;
	rbp = *(const uintptr_t *)frame;
	w->n = 0;
	w->key = mix(LIB_SEED, site);
	do {
		uint64_t rule = rule_of(pc);
		uintptr_t delta = (uint32_t)rule, saved = (rule >> 32) & 0xffff;

		if (!(rule & RULE_KNOWN) || (rule & RULE_REFUSE) || w->n == LIB_DEPTH ||
		    delta > hi - cfa)
			return false;
		cfa += delta; /* delta >= 8 and saved <= delta when learned */
		if (saved)
			rbp = *(const uintptr_t *)(cfa - saved);
		pc = *(const uintptr_t *)(cfa - 8);
		w->ret[w->n++] = pc;
		w->key = mix(w->key, pc);
	} while (in_allocator_library(pc));
	w->rbp = rbp;
	w->key = chain_walk(w->key, rbp, lo, hi);
	return true;
}

/* Learns the rules of the allocator frames of u (the site at index i) from the unwinder's
 * CFA and rbp of each frame. */
static void learn_rules(const struct unwound *u, int i, uintptr_t frame)
{
	if (i < 1 || i >= u->n || u->cfa[i] != frame + 16 ||
	    u->rbp[i] != *(const uintptr_t *)frame) {
		rule_set(u->ip[i < u->n ? i : 0], RULE_KNOWN | RULE_REFUSE);
		return;
	}
	for (int k = i; k + 1 < u->n && in_allocator_library(u->ip[k]); k++) {
		uintptr_t callee_cfa = u->cfa[k], cfa = u->cfa[k + 1], entry_rbp = u->rbp[k + 1];
		uintptr_t delta = cfa - callee_cfa;
		uintptr_t saved = 0;
		int matches = 0;

		/* rbp as this frame's pointer (gcc's push rbp; mov rsp, rbp: CFA = rbp + 16): the
		 * CFA moves with rsp (alloca), no constant describes it. */
		if (cfa <= callee_cfa || delta < 8 || delta > MAX_DELTA || (delta & 7) ||
		    u->rbp[k] + 16 == cfa || u->signal_frame[k] || u->signal_frame[k + 1]) {
			rule_set(u->ip[k], RULE_KNOWN | RULE_REFUSE);
			return;
		}
		if (u->rbp[k] != entry_rbp) {
			/* The caller's rbp is saved in this frame: the one slot that holds it, or
			 * when a stale copy lies in the frame too, the slot learned before. */
			uint64_t before = rule_of(u->ip[k]);
			uintptr_t known = (before >> 32) & 0xffff;
			bool known_matches = false;

			for (uintptr_t a = callee_cfa; a + 16 <= cfa; a += 8) {
				if (*(const uintptr_t *)a == entry_rbp) {
					saved = cfa - a;
					matches++;
					known_matches |= (before & RULE_KNOWN) &&
							 (uint32_t)before == delta &&
							 known == saved;
				}
			}
			if (matches > 1 && known_matches) {
				saved = known;
				matches = 1;
			}
			if (matches != 1 || saved > 0xffff)
				return; /* not learned this time: unwound, tried again next call */
		}
		rule_set(u->ip[k], RULE_KNOWN | (uint64_t)saved << 32 | delta);
	}
}

/* Whether the walk through the rules agrees with an unwinding of the same stack. */
static bool walk_matches(const struct lib_walk *w, const struct unwound *u, int i)
{
	if (i + w->n >= u->n)
		return false;
	for (int j = 0; j < w->n; j++)
		if (u->ip[i + 1 + j] != w->ret[j])
			return false;
	return u->rbp[i + w->n] == w->rbp;
}

static void refuse_walk(uintptr_t site, const struct lib_walk *w)
{
	rule_set(site, RULE_KNOWN | RULE_REFUSE);
	for (int j = 0; j + 1 < w->n; j++)
		rule_set(w->ret[j], RULE_KNOWN | RULE_REFUSE);
}

/* The slow half: unwinds, learns the rules, checks the walk against the unwinding, and
 * returns the entry of the walk's key (made from this unwinding when new), or when the rules
 * cannot be trusted, the entry of the whole unwound stack. */
static __attribute__((noinline)) struct count_entry *
lib_site_unwound(uintptr_t site, void *frame, struct count_entry *known)
{
	struct unwound u;
	struct lib_walk w;
	uint64_t key = 0x5eed5eed5eed5eedull; /* whole stacks: apart from the other keys */
	int i;

	unwind_now(&u);
	i = site_index(&u, site);
	if (!known)
		learn_rules(&u, i, (uintptr_t)frame);
	if (i < u.n && lib_walk(site, frame, &w)) {
		if (walk_matches(&w, &u, i))
			return known ? known : find_entry(w.key, site, &u);
		refuse_walk(site, &w);
	}
	for (int k = i; k < u.n; k++)
		key = mix(key, u.ip[k]);
	return find_entry(key ? key : 1, site, &u);
}

/* A site inside the allocator's library: the entry of the key its rules give, checked by an
 * unwinding when the key is new and at its 1st, 2nd, 4th, ... allocation. */
static struct count_entry *lib_site_entry(uintptr_t site, void *frame)
{
	struct lib_walk w;
	struct count_entry *e;
	uint64_t seen;

	if (!lib_walk(site, frame, &w))
		return lib_site_unwound(site, frame, NULL);
	e = lookup_entry(w.key);
	if (!e)
		return lib_site_unwound(site, frame, NULL);
	seen = __atomic_load_n(&e->objects, __ATOMIC_RELAXED);
	if (UNLIKELY(!(seen & (seen - 1))))
		return lib_site_unwound(site, frame, e);
	return e;
}

void exact_count_alloc(uint64_t bytes, void *site, void *frame)
{
	struct count_entry *e;

	if (UNLIKELY(!bytes || busy || in_new || !started))
		return;
	thread_objects++;
	thread_bytes += bytes;
	if (UNLIKELY(in_allocator_library((uintptr_t)site)))
		e = lib_site_entry((uintptr_t)site, frame);
	else
		e = find_entry(chain_key((uintptr_t)site, frame), (uintptr_t)site, NULL);
	if (UNLIKELY(!e)) {
		__atomic_fetch_add(&unattributed_objects, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&unattributed_bytes, bytes, __ATOMIC_RELAXED);
		return;
	}
	__atomic_fetch_add(&e->objects, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&e->bytes, bytes, __ATOMIC_RELAXED);
}

EXPORT void allocscope_count_thread(struct allocscope_count_totals *out)
{
	if (!out)
		return;
	out->objects = thread_objects;
	out->bytes = thread_bytes;
}

/* ---- operator new: counted here, with its caller as the site ---- */

static void end_new(bool *was_in_new)
{
	in_new = *was_in_new;
}

static void *find_next(void **cache, const char *name)
{
	void *fn = __atomic_load_n(cache, __ATOMIC_ACQUIRE);

	if (!fn) {
		bool was_busy = busy;

		busy = true;
		fn = dlsym(RTLD_NEXT, name);
		busy = was_busy;
		__atomic_store_n(cache, fn, __ATOMIC_RELEASE);
	}
	return fn;
}

/* No next operator new (it cannot be: a program calling one links the C++ runtime): the
 * request goes to malloc (or aligned_alloc), and a throwing variant that fails aborts. */
static void *new_fallback(size_t size, size_t align, bool nothrow)
{
	void *ptr = align ? aligned_alloc(align, (size + align - 1) & ~(align - 1))
			  : malloc(size ? size : 1);
	static const char msg[] = "liballocscope-count: out of memory in operator new\n";

	if (!ptr && !nothrow) {
		(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
		abort();
	}
	return ptr;
}

#define COUNTED_NEW(name, params, args, align, nothrow)                                         \
	EXPORT void *name params                                                                \
	{                                                                                       \
		static void *next;                                                              \
		void *(*fn) params = (void *(*) params)find_next(&next, #name);                 \
		bool was_in_new __attribute__((cleanup(end_new))) = in_new;                     \
                                                                                                \
		exact_count_alloc(size ? size : 1, __builtin_return_address(0),                 \
				  __builtin_frame_address(0));                                  \
		in_new = true;                                                                  \
		if (UNLIKELY(!fn))                                                              \
			return new_fallback(size, align, nothrow);                              \
		return fn args;                                                                 \
	}

/* clang-format off */
COUNTED_NEW(_Znwm, (size_t size), (size), 0, false)
COUNTED_NEW(_Znam, (size_t size), (size), 0, false)
COUNTED_NEW(_ZnwmRKSt9nothrow_t, (size_t size, const void *tag), (size, tag), 0, true)
COUNTED_NEW(_ZnamRKSt9nothrow_t, (size_t size, const void *tag), (size, tag), 0, true)
COUNTED_NEW(_ZnwmSt11align_val_t, (size_t size, size_t al), (size, al), al, false)
COUNTED_NEW(_ZnamSt11align_val_t, (size_t size, size_t al), (size, al), al, false)
COUNTED_NEW(_ZnwmSt11align_val_tRKSt9nothrow_t, (size_t size, size_t al, const void *tag),
	    (size, al, tag), al, true)
COUNTED_NEW(_ZnamSt11align_val_tRKSt9nothrow_t, (size_t size, size_t al, const void *tag),
	    (size, al, tag), al, true)
/* clang-format on */

/* ---- Writing the table at exit ---- */

struct out_file {
	int fd;
	bool failed;
	size_t len;
	char buf[16384];
};

static void out_flush(struct out_file *out)
{
	size_t done = 0;

	while (done < out->len && !out->failed) {
		ssize_t n = write(out->fd, out->buf + done, out->len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			out->failed = true;
		else
			done += (size_t)n;
	}
	out->len = 0;
}

static void out_add(struct out_file *out, const char *text, size_t len)
{
	while (len) {
		size_t room = sizeof(out->buf) - out->len, n = len < room ? len : room;

		memcpy(out->buf + out->len, text, n);
		out->len += n;
		text += n;
		len -= n;
		if (out->len == sizeof(out->buf))
			out_flush(out);
	}
}

static void out_printf(struct out_file *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void out_printf(struct out_file *out, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		out_add(out, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void out_copy_file(struct out_file *out, const char *path)
{
	char chunk[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0) {
		out->failed = true;
		return;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			out->failed = true;
			break;
		}
		out_add(out, chunk, (size_t)n);
	}
	close(fd);
}

/* <dir>/<pid>-<n>.count, created exclusively (a reused pid takes the next n). */
static int open_count_file(const char *dir, char *path, size_t len)
{
	for (int n = 0; n < 1000; n++) {
		int fd, w = snprintf(path, len, "%s/%d-%d.count", dir, (int)getpid(), n);

		if (w < 0 || (size_t)w >= len)
			return -1;
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != EEXIST)
			return fd;
	}
	return -1;
}

static void write_counts(void)
{
	static struct out_file out; /* 16 KiB: not on the stack of whatever thread exits */
	const char *dir = getenv("ALLOCSCOPE_COUNT_DIR");
	char path[4096], exe[4096];
	uint32_t used;
	ssize_t exe_len;

	if (!dir || !*dir || !started || getpid() != owner_pid)
		return;
	busy = true;
	out.fd = open_count_file(dir, path, sizeof(path));
	if (out.fd < 0) {
		static const char msg[] = "liballocscope-count: cannot write the counts into "
					  "$ALLOCSCOPE_COUNT_DIR\n";

		(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
		busy = false;
		return;
	}
	out.failed = false;
	out.len = 0;
	exe_len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[exe_len > 0 ? exe_len : 0] = '\0';
	for (char *c = exe; *c; c++)
		if (*c == '\n')
			*c = '?';
	out_printf(&out, "allocscope-count 1\npid %d\nexe %s\n", (int)getpid(), exe);
	out_printf(&out, "leaf %" PRIxPTR "\n", next_malloc_pc);
	out_printf(&out, "unattributed %" PRIu64 " %" PRIu64 "\n",
		   __atomic_load_n(&unattributed_objects, __ATOMIC_RELAXED),
		   __atomic_load_n(&unattributed_bytes, __ATOMIC_RELAXED));
	used = __atomic_load_n(&n_entries, __ATOMIC_ACQUIRE);
	for (uint32_t i = 0; i < used && i < MAX_KEYS; i++) {
		const struct count_entry *e = &entries[i];
		uint64_t objects = __atomic_load_n(&e->objects, __ATOMIC_RELAXED);
		uint64_t bytes = __atomic_load_n(&e->bytes, __ATOMIC_RELAXED);

		if (!objects)
			continue;
		out_printf(&out, "stack %" PRIu64 " %" PRIu64, objects, bytes);
		if (__atomic_load_n(&e->ready, __ATOMIC_ACQUIRE)) {
			for (uint32_t k = 0; k < e->n_frames; k++)
				out_printf(&out, " %" PRIx64, e->frames[k]);
		} else {
			out_printf(&out, " %" PRIx64 " %" PRIx64,
				   (uint64_t)(uintptr_t)exact_count_alloc, e->site);
		}
		out_add(&out, "\n", 1);
	}
	out_add(&out, "maps\n", 5);
	out_copy_file(&out, "/proc/self/maps");
	out_flush(&out);
	close(out.fd);
	if (out.failed)
		unlink(path); /* a partial file would count less than happened */
	busy = false;
}

/* The child of fork counts its own allocations from zero; the keys and stacks stay valid
 * (the same mappings). */
static void count_after_fork_in_child(void)
{
	uint32_t used = __atomic_load_n(&n_entries, __ATOMIC_RELAXED);

	for (uint32_t i = 0; i < used && i < MAX_KEYS; i++) {
		entries[i].objects = 0;
		entries[i].bytes = 0;
	}
	unattributed_objects = 0;
	unattributed_bytes = 0;
	owner_pid = getpid();
}

/* The executable segment of the object that holds the next malloc. */
static int find_allocator_text(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	for (int k = 0; k < info->dlpi_phnum; k++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[k];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && next_malloc_pc >= lo &&
		    next_malloc_pc < lo + ph->p_memsz) {
			lib_text_lo = lo;
			lib_text_hi = lo + ph->p_memsz;
			return 1;
		}
	}
	return 0;
}

__attribute__((constructor(101))) static void count_init(void)
{
	struct unwound u;

	/* The first unwinding sets the unwinder up: done now, not inside a malloc. */
	busy = true;
	unwind_now(&u);
	(void)thread_stack_top();
	next_malloc_pc = (uintptr_t)dlsym(RTLD_NEXT, "malloc");
	if (next_malloc_pc)
		dl_iterate_phdr(find_allocator_text, NULL);
	pthread_atfork(NULL, NULL, count_after_fork_in_child);
	owner_pid = getpid();
	busy = false;
	__atomic_store_n(&started, true, __ATOMIC_RELEASE);
}

__attribute__((destructor(101))) static void count_fini(void)
{
	write_counts();
	__atomic_store_n(&started, false, __ATOMIC_RELEASE); /* written once */
}

/* A process that ends with _exit (shells do; so do forked children that do not exec) runs no
 * destructor: its counts are written here. */
EXPORT void _exit(int status)
{
	count_fini();
	syscall(SYS_exit_group, status);
	__builtin_unreachable();
}

EXPORT void _Exit(int status)
{
	_exit(status);
}
#endif
