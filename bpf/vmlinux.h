/* The few kernel types the BPF program touches, declared by hand instead of dumping the build
 * machine's BTF: the build then never depends on the kernel it runs on. preserve_access_index
 * makes every field access a CO-RE relocation that libbpf fixes up against the running
 * kernel's BTF at load time. Types from the UAPI (maps, helpers, flags) come from
 * <linux/bpf.h> as usual. */
#ifndef ALLOCSCOPE_VMLINUX_H
#define ALLOCSCOPE_VMLINUX_H
/* Tells bpf_tracing.h to use the kernel's pt_regs field names (di, si, sp...). */
#define __VMLINUX_H__

#include <linux/types.h>
#include <linux/bpf.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* x86-64 user registers as saved on entry to the kernel (arch/x86/include/asm/ptrace.h). */
struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bp;
	unsigned long bx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
	unsigned long ip;
	unsigned long cs;
	unsigned long flags;
	unsigned long sp;
	unsigned long ss;
};

/* Only the two fields the fork tracepoint reads; every access is relocated by field name. */
struct task_struct {
	int pid;
	int tgid;
};

#pragma clang attribute pop

#endif
