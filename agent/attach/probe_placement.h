/* Where to put a function's entry uprobe. A uprobe on an instruction the kernel emulates (push
 * %reg, jmp/jcc/call rel, canonical nops) costs ~0.5 us a hit; on anything else the kernel
 * single-steps it and it costs ~9.5 us. So the probe moves forward from the entry, inside the
 * first basic block, to the first emulated instruction, provided that nothing skipped on the way
 * changes what the probe reads (the entry's size arguments, rsp, and the callee-saved registers
 * that stack unwinding starts from) and that no branch in the function lands inside the skipped
 * bytes (the probe would fire twice or not at all). */
#ifndef ALLOCSCOPE_PROBE_PLACEMENT_H
#define ALLOCSCOPE_PROBE_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attach/x86_decode.h"

/* How far the probe may move: a prologue worth skipping is a check or two, never a loop. */
#define PROBE_PLACEMENT_MAX_SKIP_INSNS 8
#define PROBE_PLACEMENT_MAX_SKIP_BYTES 32

/* What every probe needs unchanged whatever the entry: rsp (the return address at *sp, the
 * stack copy) and the callee-saved registers (rbp for the frame-pointer walk; rbx, rbp,
 * r12-r15 for CFI unwinding, which takes the caller's values from them at an entry). A skipped
 * instruction that wrote one of them would need CFI to say where the old value went. */
#define PROBE_PLACEMENT_KEPT_REGS                                                                  \
	(X86_REG_BIT(X86_RSP) | X86_REG_BIT(X86_RBP) | X86_REG_BIT(X86_RBX) |                      \
	 X86_REG_BIT(X86_R12) | X86_REG_BIT(X86_R13) | X86_REG_BIT(X86_R14) |                      \
	 X86_REG_BIT(X86_R15))

/* The six argument registers of the System V ABI, in order: the mask for a probe that may read
 * any argument. */
#define PROBE_PLACEMENT_ARG_REGS                                                                   \
	(X86_REG_BIT(X86_RDI) | X86_REG_BIT(X86_RSI) | X86_REG_BIT(X86_RDX) |                      \
	 X86_REG_BIT(X86_RCX) | X86_REG_BIT(X86_R8) | X86_REG_BIT(X86_R9))

struct probe_placement {
	uint32_t offset;       /* bytes from function entry where the probe goes */
	bool emulated;	       /* the kernel emulates the instruction at offset (cheap probe) */
	uint8_t skipped_insns; /* instructions between the entry and offset */
	char insn_desc[48];    /* the instruction at offset: "push %r12", "jcc rel32", "cmp" */
	char reason[160];      /* empty when emulated; else why no emulated site was usable */
};

/* code: the function's bytes starting at its entry; code_len: how many bytes are in code (may
 * be less than func_size when the caller only read a prefix); func_size: symbol size (0 if
 * unknown); read_regs: the registers (X86_REG_BIT) the probe's program reads at the entry,
 * e.g. X86_REG_BIT(X86_RSI) for memalign's size; PROBE_PLACEMENT_KEPT_REGS are always added.
 * No skipped instruction writes any of them.
 * Moving past +0 needs the whole function: every relative branch in it is checked, so with
 * func_size 0 or code_len < func_size the probe stays at +0 (and the reason says so).
 * Returns 0 and fills *out; -EINVAL only for invalid arguments (out NULL, or code NULL with
 * code_len > 0). A function that cannot be improved yields offset 0, emulated=false (or true if
 * +0 is already emulated) and a reason. */
int probe_placement_choose(const uint8_t *code, size_t code_len, size_t func_size,
			   uint16_t read_regs, struct probe_placement *out);

#endif
