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

/* The credentials a sample is checked against when allocscope acts for a caller who is not
 * root. Ids and capability sets are single-member structs in the kernel; both layouts of
 * kernel_cap_t (u64 since Linux 6.3, u32[2] before) are 8 bytes, read whole. */
typedef struct {
	__u32 val;
} kuid_t;
typedef struct {
	__u32 val;
} kgid_t;
typedef struct {
	__u64 val;
} kernel_cap_t;

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t suid;
	kgid_t sgid;
	kuid_t euid;
	kgid_t egid;
	kernel_cap_t cap_permitted;
};

/* A process's dumpable mode sits in the low two bits of mm_struct's flags: an unsigned long
 * before Linux 6.18, the first word of a one-word bitmap (mm_flags_t) since. The two layouts
 * are two flavours of mm_struct; the program asks which the kernel has
 * (bpf_core_field_exists) and reads that one. */
struct mm_struct;
struct mm_struct___flags_word {
	unsigned long flags;
};
struct mm_flags_bitmap {
	unsigned long __mm_flags[1];
};
struct mm_struct___flags_bitmap {
	struct mm_flags_bitmap flags;
};

/* x86-64: the thread pointer (%fs base) the task's TLS hangs from (context.bpf.h). */
struct thread_struct {
	unsigned long fsbase;
};
/* A pending return probe (kernel/events/uprobes.c): where the kernel's trampoline took the
 * place of a return address (stack: the slot's address, the sp at the probed entry) and the
 * address it replaced. A task's pending ones, newest first, hang from its uprobe_task. The
 * trampoline sits at the start of the process's uprobes page (xol_area), which mm_struct
 * embeds in an anonymous struct: CO-RE finds the field through it. (uretprobe.bpf.h) */
struct return_instance {
	unsigned long stack;
	unsigned long orig_ret_vaddr;
	struct return_instance *next;
};
struct uprobe_task {
	struct return_instance *return_instances;
};
struct xol_area {
	unsigned long vaddr;
};
struct uprobes_state {
	struct xol_area *xol_area;
};
struct mm_struct___uprobes {
	struct uprobes_state uprobes_state;
};

/* Only the fields the programs read; every access is relocated by field name. */
struct task_struct {
	int pid;
	int tgid;
	const struct cred *real_cred;
	struct thread_struct thread;
	struct mm_struct *mm;
	struct uprobe_task *utask;
};

/* What the in-kernel unwinder reads of a mapping it meets outside the process's list: the
 * mapped file's identity, as /proc/PID/maps shows it (unwind.bpf.h). */
struct super_block {
	__u32 s_dev;
};

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
};

struct file {
	struct inode *f_inode;
};

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_pgoff;
	struct file *vm_file;
};

#pragma clang attribute pop

#endif
