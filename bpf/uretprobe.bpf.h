/* Return addresses the kernel's return probes replaced, for alloc.bpf.c and unwind.bpf.h.
 *
 * A return probe (a uretprobe, or a session uprobe asking for the return) on a function makes
 * the kernel overwrite the return address at the function's entry with its trampoline, the
 * first slot of the process's [uprobes] page, and keep the real one in a return_instance of
 * the task. Any such consumer of the same uprobe does it for every process the uprobe fires
 * in, whatever its own pid filter: another allocscope with --inuse, or any tool's uretprobe on
 * glibc's realloc, traps the returns of the processes this one profiles. glibc's realloc(NULL,
 * n), and memalign and aligned_alloc with an alignment malloc already gives, end in a tail
 * jump to malloc: when malloc's probe runs, the word at *sp is the trampoline, not the return
 * into the caller. Read as a return address it is a site of its own, at the [uprobes] page's
 * address (0x7fffffffe000, the kernel's first choice, or wherever that is taken: just below
 * the libraries in a process without ASLR, whose stack holds that address), and no unwinding
 * goes past it.
 *
 * So every return address read from the user stack goes through uretprobe_original(), which
 * gives the replaced address back when the word is the trampoline and a pending return of the
 * task was set at that very slot. The frame-pointer walk of bpf_get_stack is left as it is:
 * recent kernels fix its frames themselves. What this cannot resolve (a return
 * instance past the search's bound) the agent cuts the stack at, never taking the trampoline
 * for a caller. */
#ifndef ALLOCSCOPE_URETPROBE_BPF_H
#define ALLOCSCOPE_URETPROBE_BPF_H

/* Pending return probes searched for a slot, newest first: the kernel keeps at most 64 per
 * task (MAX_URETPROBE_DEPTH); the ones this program meets are the newest few. */
#define URETPROBE_MAX_PENDING 32

/* The current process's trampoline address; 0 when it has no [uprobes] page (no return probe
 * was ever set in it), and then no word on its stacks is one. */
static __always_inline __u64 uretprobe_trampoline(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct___uprobes *mm;
	struct xol_area *area;

	if (!bpf_core_field_exists(task->utask) ||
	    !bpf_core_field_exists(((struct mm_struct___uprobes *)0)->uprobes_state))
		return 0;
	mm = (struct mm_struct___uprobes *)BPF_CORE_READ(task, mm);
	if (!mm)
		return 0;
	area = BPF_CORE_READ(mm, uprobes_state.xol_area);
	if (!area)
		return 0;
	return BPF_CORE_READ(area, vaddr);
}

/* The return address the kernel's trampoline replaced at slot, the stack address ra was read
 * from; ra itself when it is not the trampoline, or when no pending return of this task was
 * set at slot (then the agent sees the trampoline and cuts the stack there). A global
 * function: the verifier checks it once, not at each of its callers (a static one tripled
 * the program's load time), and it needs nothing a kernel with uprobes lacks. */
__noinline __u64 uretprobe_original(__u64 trampoline, __u64 slot, __u64 ra)
{
	struct task_struct *task;
	struct return_instance *ri;

	if (!trampoline || ra != trampoline)
		return ra;
	task = (struct task_struct *)bpf_get_current_task();
	ri = BPF_CORE_READ(task, utask, return_instances);
	for (int i = 0; i < URETPROBE_MAX_PENDING && ri; i++) {
		/* A tail call (realloc -> malloc) leaves several at one slot, chained: each
		 * holds the same original address. */
		if (BPF_CORE_READ(ri, stack) == slot)
			return BPF_CORE_READ(ri, orig_ret_vaddr);
		ri = BPF_CORE_READ(ri, next);
	}
	return ra;
}

/* The stack copy of a sample, [sp, sp + copied): each slot where one of the task's newest
 * pending returns replaced the return address gets the original back, so that the agent's
 * unwinder reads the real return addresses (the loop is checked at each caller of
 * submit_sample: 8 keeps the load time near what it was; the agent cuts a stack at an older
 * one). */
#define URETPROBE_COPY_PENDING 8
static __always_inline void uretprobe_fix_copy(__u64 trampoline, __u64 sp, __u8 *copy, __u32 copied,
					       __u32 copy_size)
{
	struct task_struct *task;
	struct return_instance *ri;

	if (!trampoline || copied < 8)
		return;
	task = (struct task_struct *)bpf_get_current_task();
	ri = BPF_CORE_READ(task, utask, return_instances);
	for (int i = 0; i < URETPROBE_COPY_PENDING && ri; i++) {
		__u64 slot = BPF_CORE_READ(ri, stack);
		__u64 original = BPF_CORE_READ(ri, orig_ret_vaddr), off;

		ri = BPF_CORE_READ(ri, next);
		if (slot < sp || slot - sp > copied - 8)
			continue;
		off = (slot - sp) & ~7ull;
		if (off > copy_size - 8 || off > ALLOC_MAX_STACK_COPY - 8)
			continue;
		/* Chained ones at one slot: the first restores it, the others find no
		 * trampoline there. */
		if (*(__u64 *)(copy + off) == trampoline)
			*(__u64 *)(copy + off) = original;
	}
}

#endif
