/* Where to put a function's entry uprobe. A uprobe on an instruction the kernel emulates (push
 * %reg, jmp/jcc/call rel, canonical nops) costs ~0.5 us a hit; on anything else the kernel
 * single-steps it and it costs ~9.5 us. So the probe moves forward from the entry, inside the
 * first basic block, to the first emulated instruction, provided that nothing skipped on the way
 * changes what the probe reads (argument registers, rsp, rbp) and that no branch in the
 * function lands inside the skipped bytes (the probe would fire twice or not at all). */
#ifndef ALLOCSCOPE_PROBE_PLACEMENT_H
#define ALLOCSCOPE_PROBE_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How far the probe may move: a prologue worth skipping is a check or two, never a loop. */
#define PROBE_PLACEMENT_MAX_SKIP_INSNS 8
#define PROBE_PLACEMENT_MAX_SKIP_BYTES 32

struct probe_placement {
	uint32_t offset;       /* bytes from function entry where the probe goes */
	bool emulated;	       /* the kernel emulates the instruction at offset (cheap probe) */
	uint8_t skipped_insns; /* instructions between the entry and offset */
	char insn_desc[48];    /* the instruction at offset: "push %r12", "jcc rel32", "cmp" */
	char reason[160];      /* empty when emulated; else why no emulated site was usable */
};

/* code: the function's bytes starting at its entry; code_len: how many bytes are in code (may
 * be less than func_size when the caller only read a prefix); func_size: symbol size (0 if
 * unknown).
 * Moving past +0 needs the whole function: every relative branch in it is checked, so with
 * func_size 0 or code_len < func_size the probe stays at +0 (and the reason says so).
 * Returns 0 and fills *out; -EINVAL only for invalid arguments (out NULL, or code NULL with
 * code_len > 0). A function that cannot be improved yields offset 0, emulated=false (or true if
 * +0 is already emulated) and a reason. */
int probe_placement_choose(const uint8_t *code, size_t code_len, size_t func_size,
			   struct probe_placement *out);

#endif
