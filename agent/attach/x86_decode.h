/* x86-64 instruction decoder for probe placement: it finds where one instruction ends (legacy
 * prefixes, REX, VEX, EVEX, opcode maps 0f/0f38/0f3a, ModRM/SIB/displacement, immediates) and
 * tells what placement needs to know about it: what kind of control flow it is and where a
 * relative branch lands, whether the kernel's uprobe code emulates it (cheap probe) or
 * single-steps it (20x dearer), and which general registers it may write.
 * It never guesses: an opcode it does not know is an error, so a caller never walks on with a
 * wrong length. 64-bit mode only. */
#ifndef ALLOCSCOPE_X86_DECODE_H
#define ALLOCSCOPE_X86_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The architectural limit: longer byte sequences raise #GP, so they are never instructions. */
#define X86_MAX_INSN_LEN 15

/* General registers in encoding order, as ModRM, SIB and REX number them. */
enum x86_reg {
	X86_RAX,
	X86_RCX,
	X86_RDX,
	X86_RBX,
	X86_RSP,
	X86_RBP,
	X86_RSI,
	X86_RDI,
	X86_R8,
	X86_R9,
	X86_R10,
	X86_R11,
	X86_R12,
	X86_R13,
	X86_R14,
	X86_R15,
};

#define X86_REG_BIT(reg) ((uint16_t)(1u << (reg)))
/* Used for every instruction whose register writes are not modelled (SSE, AVX, system...). */
#define X86_REGS_ALL 0xffffu

enum x86_insn_kind {
	X86_INSN_OTHER,	     /* falls through to the next instruction */
	X86_INSN_NOP,	     /* 0x90 without REX.B, pause, 0f 1f /0, 0f 18-1f hint nops */
	X86_INSN_ENDBR,	     /* endbr64 / endbr32: CET landing pads, write nothing */
	X86_INSN_PUSH_REG,   /* push %reg (50+r, optionally REX-prefixed); reg is set */
	X86_INSN_JMP_REL,    /* jmp rel8 / rel32 */
	X86_INSN_JCC_REL,    /* jcc rel8 / rel32 */
	X86_INSN_CALL_REL,   /* call rel32 */
	X86_INSN_BRANCH_REL, /* other relative branches: loop*, jrcxz, xbegin */
	X86_INSN_RET,	     /* near ret, ret imm16 */
	X86_INSN_OTHER_FLOW, /* indirect jmp/call, far transfers, int3, int, syscall, ud*, hlt */
};

enum x86_encoding {
	X86_ENC_LEGACY,
	X86_ENC_VEX,
	X86_ENC_EVEX,
};

enum x86_opcode_map {
	X86_MAP_ONE_BYTE,
	X86_MAP_0F,
	X86_MAP_0F38,
	X86_MAP_0F3A,
};

struct x86_insn {
	uint8_t length;	      /* bytes, prefixes included */
	uint8_t prefix_count; /* legacy prefixes (not REX/VEX/EVEX) */
	uint8_t rex;	      /* REX byte, 0 when absent */
	enum x86_encoding encoding;
	enum x86_opcode_map map;
	uint8_t opcode; /* the opcode byte within its map */
	bool has_modrm;
	uint8_t modrm;
	enum x86_insn_kind kind;
	const char *mnemonic; /* static family name: "mov", "cmp", "push", "jcc", "avx" */
	int8_t reg;	      /* enum x86_reg of push/pop %reg, -1 otherwise */
	bool rip_relative;    /* memory operand addressed relative to the next rip */
	/* Relative branches: where they land, counted from this instruction's first byte, so the
	 * target's offset in a function is the instruction's offset plus target. */
	bool has_target;
	int64_t target;
	uint8_t rel_size; /* 1 or 4: size of the relative displacement */
	/* Registers the instruction may write (X86_REG_BIT); memory destinations write none;
	 * X86_REGS_ALL when not modelled. rip and flags are not counted. */
	uint16_t writes;
	/* What arch/x86/kernel/uprobes.c does with a uprobe on this instruction (checked on
	 * Linux 6.18): emulated ones cost an int3 trap, the rest are single-stepped out of line. */
	bool emulated;
	/* The kernel emulates it with the wrong semantics (41 90, xchg %eax,%r8d, is emulated as a
	 * nop): a probe here would change what the program does. */
	bool emulation_unsafe;
	/* The kernel rejects a uprobe here (ENOTSUPP): lock or cs/ds/es/ss prefixes, or a 0x66
	 * prefix on a relative branch. */
	bool kernel_refuses;
};

/* Decodes the instruction at code[0]. avail: readable bytes at code.
 * Returns 0 and fills *insn; -ENODATA when avail ends inside the instruction; -EILSEQ when the
 * bytes are not an instruction this decoder knows (unknown or invalid opcode, reserved
 * encodings, lengths that depend on the CPU vendor such as 0x66 on rel32 branches, more than 15
 * bytes); -EINVAL when code or insn is NULL. *insn is only meaningful after a 0 return. */
int x86_decode(const uint8_t *code, size_t avail, struct x86_insn *insn);

/* "rax" ... "r15"; "?" for a number outside 0-15. */
const char *x86_reg_name(unsigned int reg);

/* A short description for logs and reports: "push %r12", "jcc rel8", "call rel32", "cmp". */
void x86_insn_describe(const struct x86_insn *insn, char *buf, size_t size);

#endif
