/* A minimal USDT (user-space statically defined tracepoint) for x86-64, written for the
 * in-process sampler so that it depends on nothing but the assembler.
 *
 * Each probe site is a 5-byte NOP (nopl 0x0(%rax,%rax,1): 0f 1f 44 00 00) and a SystemTap v3
 * note, the format readelf, bpftrace, libbpf and BCC all read:
 *
 *   section .note.stapsdt (not loaded), note type 3, owner "stapsdt", descriptor:
 *     u64 pc         link-time address of the NOP
 *     u64 base       link-time address of the symbol _.stapsdt.base, so that a tool that sees
 *                    the section moved (prelink) can adjust pc and semaphore by the difference
 *     u64 semaphore  link-time address of the probe's semaphore
 *     provider\0 name\0 arguments\0
 *
 * _.stapsdt.base lives in a one-byte section .stapsdt.base, emitted once per object file and
 * folded into one by the linker (a comdat group), as the SystemTap headers do.
 *
 * Why a 5-byte NOP and not the usual 1-byte one: Linux 6.18 turns a uprobe placed on a nop5
 * into a call to a trampoline (~0.35 us per hit instead of ~0.5 us for the int3 trap).
 *
 * Arguments: the probe takes exactly three 64-bit values, forced into fixed registers by the
 * asm's input constraints ("D", "S", "d"), so the argument string is always the constant
 * "8@%rdi 8@%rsi 8@%rdx" (8 = unsigned 64-bit). Being constant, it costs the compiler no
 * freedom in optimised code beyond three register moves, and any USDT reader decodes it.
 *
 * The semaphore is an unsigned short in section .probes. A profiler that attaches a uprobe with
 * that semaphore's file offset as the reference counter (perf_event_open's ref_ctr_offset,
 * libbpf's usdt attach) makes the kernel add 1 to it in every process mapping the file, and
 * subtract 1 on detach; code tests it with ALLOCSCOPE_USDT_ENABLED to skip argument work when
 * nobody listens.
 *
 * Use:
 *   ALLOCSCOPE_USDT_SEMAPHORE(prov, name);      once, at file scope, where the probe is fired
 *   if (ALLOCSCOPE_USDT_ENABLED(prov, name))  ...
 *   ALLOCSCOPE_USDT3(prov, name, a, b, c);
 * prov and name are bare identifiers; the semaphore's symbol is prov_name_semaphore. */
#ifndef ALLOCSCOPE_USDT_H
#define ALLOCSCOPE_USDT_H

#if !defined(__x86_64__)
#error "sampler/usdt.h: only x86-64 is supported (fixed argument registers)"
#endif

#define ALLOCSCOPE_USDT_STR_(x)			 #x
#define ALLOCSCOPE_USDT_STR(x)			 ALLOCSCOPE_USDT_STR_(x)
#define ALLOCSCOPE_USDT_SEM_NAME(provider, name) provider##_##name##_semaphore

/* Defines the probe's semaphore: hidden (it is found through the note, not the dynamic symbol
 * table), volatile (the kernel writes it behind the compiler's back), used (kept even when only
 * the asm refers to it). */
#define ALLOCSCOPE_USDT_SEMAPHORE(provider, name)                                                  \
	__attribute__((section(".probes"), used, visibility("hidden"))) volatile unsigned short    \
	ALLOCSCOPE_USDT_SEM_NAME(provider, name)

/* Nonzero while at least one profiler is attached to provider:name. */
#define ALLOCSCOPE_USDT_ENABLED(provider, name)                                                    \
	__builtin_expect(ALLOCSCOPE_USDT_SEM_NAME(provider, name) != 0, 0)

/* The note for one probe site whose NOP carries the local label 990. The .stapsdt.base
 * definition is guarded by .ifndef so that several sites in one file share one. */
#define ALLOCSCOPE_USDT_NOTE_(provider, name, args)                                                \
	".pushsection .note.stapsdt,\"?\",\"note\"\n"                                              \
	".balign 4\n"                                                                              \
	".4byte 992f-991f, 994f-993f, 3\n"                                                         \
	"991: .asciz \"stapsdt\"\n"                                                                \
	"992: .balign 4\n"                                                                         \
	"993: .8byte 990b\n"                                                                       \
	".8byte _.stapsdt.base\n"                                                                  \
	".8byte " ALLOCSCOPE_USDT_STR(ALLOCSCOPE_USDT_SEM_NAME(                                    \
	    provider,                                                                              \
	    name)) "\n"                                                                            \
		   ".asciz \"" #provider "\"\n"                                                    \
		   ".asciz \"" #name "\"\n"                                                        \
		   ".asciz \"" args "\"\n"                                                         \
		   "994: .balign 4\n"                                                              \
		   ".popsection\n"                                                                 \
		   ".ifndef _.stapsdt.base\n"                                                      \
		   ".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n"         \
		   ".weak _.stapsdt.base\n"                                                        \
		   ".hidden _.stapsdt.base\n"                                                      \
		   "_.stapsdt.base: .space 1\n"                                                    \
		   ".size _.stapsdt.base, 1\n"                                                     \
		   ".popsection\n"                                                                 \
		   ".endif\n"

/* Fires provider:name with three values, each converted to a 64-bit unsigned integer. The
 * NOP is emitted even if the compiler duplicates the statement (each copy gets its own note,
 * numeric local labels allow that). */
#define ALLOCSCOPE_USDT3(provider, name, arg1, arg2, arg3)                                         \
	do {                                                                                       \
		unsigned long long allocscope_usdt_a1_ = (unsigned long long)(arg1);               \
		unsigned long long allocscope_usdt_a2_ = (unsigned long long)(arg2);               \
		unsigned long long allocscope_usdt_a3_ = (unsigned long long)(arg3);               \
		__asm__ __volatile__(                                                              \
		    "990: .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n" ALLOCSCOPE_USDT_NOTE_(             \
			provider, name, "8@%%rdi 8@%%rsi 8@%%rdx")                                 \
		    :                                                                              \
		    : "D"(allocscope_usdt_a1_), "S"(allocscope_usdt_a2_),                          \
		      "d"(allocscope_usdt_a3_));                                                   \
	} while (0)

/* Fires provider:name with one value (otel_memory:free(ptr)): argument string "8@%rdi". */
#define ALLOCSCOPE_USDT1(provider, name, arg1)                                                     \
	do {                                                                                       \
		unsigned long long allocscope_usdt_a1_ = (unsigned long long)(arg1);               \
		__asm__ __volatile__("990: .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n" ALLOCSCOPE_USDT_NOTE_( \
					 provider, name, "8@%%rdi")                                \
				     :                                                             \
				     : "D"(allocscope_usdt_a1_));                                  \
	} while (0)

#endif
