/* x86-64 instruction length decoder with the few semantics probe placement needs.
 *
 * Probe placement walks a function's prologue and scans its whole body for branches, so a
 * single wrong length would make it reason about bytes that are not instructions. Every legacy
 * and VEX opcode is therefore listed explicitly and what is not listed is -EILSEQ, never a
 * guess; only EVEX is accepted by format (maps 0f/0f38/0f3a), as its length never depends on
 * the opcode beyond the map's immediate rule.
 *
 * What "emulated" means mirrors arch/x86/kernel/uprobes.c (branch_setup_xol_ops,
 * push_setup_xol_ops, is_prefix_bad) and was checked by timing uprobes on Linux 6.18: emulated
 * sites cost ~0.5 us a hit, single-stepped ones ~9.5 us, refused ones fail with ENOTSUPP. */
#include "attach/x86_decode.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum imm_kind {
	IMM_NONE,
	IMM_8,
	IMM_16,
	IMM_16_8,  /* enter: imm16 then imm8 */
	IMM_Z,	   /* 16 bits with 0x66, else 32 (REX.W keeps 32, sign-extended) */
	IMM_V,	   /* mov r, imm: 64 bits with REX.W, 16 with 0x66, else 32 */
	IMM_MOFFS, /* a0-a3 absolute address: 64 bits, 32 with 0x67 */
	REL_8,
	REL_Z, /* rel32; 0x66 makes the length vendor-dependent, so it is refused */
};

/* Which operand an instruction writes, beyond the registers it always writes. */
enum write_rule {
	WR_NONE,
	WR_RM,	   /* ModRM.rm when it names a register (mod == 3) */
	WR_REG,	   /* ModRM.reg */
	WR_RM_REG, /* both: xchg, xadd */
	WR_OPREG,  /* the register in the low 3 opcode bits: 50+r style */
	WR_ALL,	   /* not modelled: assume everything */
};

struct opcode_info {
	bool valid;
	bool modrm;
	bool byte_operands;    /* 8-bit register operands: without REX, 4-7 mean ah, ch, dh, bh */
	bool modrm_always_reg; /* mov to/from cr/dr: the operand is a register whatever mod says */
	enum imm_kind imm;
	enum write_rule rule;
	uint16_t fixed_writes; /* registers written whatever the operands */
	enum x86_insn_kind kind;
	const char *mnemonic;
};

struct decoder {
	const uint8_t *code;
	size_t avail;
	size_t pos;
	uint8_t prefix_count;
	bool opsize;	     /* 0x66 */
	bool addrsize;	     /* 0x67 */
	bool rep;	     /* 0xf3 */
	bool repne;	     /* 0xf2 */
	bool lock;	     /* 0xf0 */
	bool refused_prefix; /* lock, cs, ds, es, ss: the kernel refuses uprobes on these */
	uint8_t rex;
};

#define BIT(reg) X86_REG_BIT(X86_##reg)

static const char *const reg_names[16] = {
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15",
};

const char *x86_reg_name(unsigned int reg)
{
	return reg < 16 ? reg_names[reg] : "?";
}

static int next_byte(struct decoder *d, uint8_t *byte)
{
	if (d->pos >= X86_MAX_INSN_LEN)
		return -EILSEQ;
	if (d->pos >= d->avail)
		return -ENODATA;
	*byte = d->code[d->pos++];
	return 0;
}

/* Reads a little-endian field of size bytes, sign-extended (displacements are signed). */
static int read_field(struct decoder *d, unsigned int size, int64_t *value)
{
	uint64_t raw = 0;
	uint8_t byte;
	int err;

	for (unsigned int i = 0; i < size; i++) {
		err = next_byte(d, &byte);
		if (err)
			return err;
		raw |= (uint64_t)byte << (8 * i);
	}
	if (size < 8 && (raw >> (8 * size - 1)) & 1)
		raw |= ~0ull << (8 * size);
	*value = (int64_t)raw;
	return 0;
}

static int skip_bytes(struct decoder *d, unsigned int size)
{
	int64_t ignored;

	return read_field(d, size, &ignored);
}

static bool is_legacy_prefix(uint8_t byte)
{
	switch (byte) {
	case 0x26:
	case 0x2e:
	case 0x36:
	case 0x3e:
	case 0x64:
	case 0x65:
	case 0x66:
	case 0x67:
	case 0xf0:
	case 0xf2:
	case 0xf3:
		return true;
	default:
		return false;
	}
}

static void note_prefix(struct decoder *d, uint8_t byte)
{
	d->prefix_count++;
	switch (byte) {
	case 0x66:
		d->opsize = true;
		break;
	case 0x67:
		d->addrsize = true;
		break;
	case 0xf2:
		d->repne = true;
		break;
	case 0xf3:
		d->rep = true;
		break;
	case 0xf0:
		d->lock = true;
		d->refused_prefix = true;
		break;
	case 0x26:
	case 0x2e:
	case 0x36:
	case 0x3e:
		d->refused_prefix = true;
		break;
	default: /* fs, gs */
		break;
	}
}

struct op_range {
	uint8_t first, last;
};

static bool in_ranges(const struct op_range *ranges, size_t count, uint8_t op)
{
	for (size_t i = 0; i < count; i++)
		if (op >= ranges[i].first && op <= ranges[i].last)
			return true;
	return false;
}

#define IN_RANGES(table, op) in_ranges(table, sizeof(table) / sizeof(table[0]), op)

/* Defined opcodes of the three-byte maps without VEX (SSSE3, SSE4, AES, SHA, CRC32, MOVBE,
 * ADX, MOVDIR, INVPCID, Key Locker...). Every one has a ModRM byte; 0f3a adds an imm8. */
static const struct op_range legacy_0f38_ops[] = {
    {0x00, 0x0b}, {0x10, 0x10}, {0x14, 0x15}, {0x17, 0x17}, {0x1c, 0x1e}, {0x20, 0x25},
    {0x28, 0x2b}, {0x30, 0x35}, {0x37, 0x41}, {0x80, 0x82}, {0xc8, 0xcd}, {0xcf, 0xcf},
    {0xd8, 0xdf}, {0xf0, 0xf1}, {0xf5, 0xf6}, {0xf8, 0xfc},
};
static const struct op_range legacy_0f3a_ops[] = {
    {0x08, 0x0f}, {0x14, 0x17}, {0x20, 0x22}, {0x40, 0x42}, {0x44, 0x44},
    {0x60, 0x63}, {0xcc, 0xcc}, {0xce, 0xcf}, {0xdf, 0xdf},
};

/* Defined VEX opcodes per map (AVX, AVX2, FMA, F16C, BMI1/2, AVX-VNNI, AMX, mask ops...). */
static const struct op_range vex_0f_ops[] = {
    {0x10, 0x17}, {0x28, 0x2f}, {0x41, 0x42}, {0x44, 0x47}, {0x4a, 0x4b}, {0x50, 0x77},
    {0x7c, 0x7f}, {0x90, 0x93}, {0x98, 0x99}, {0xae, 0xae}, {0xc2, 0xc6}, {0xd0, 0xfe},
};
static const struct op_range vex_0f38_ops[] = {
    {0x00, 0x0f}, {0x13, 0x13}, {0x16, 0x1a}, {0x1c, 0x1e}, {0x20, 0x25}, {0x28, 0x41},
    {0x45, 0x47}, {0x49, 0x49}, {0x4b, 0x4b}, {0x50, 0x53}, {0x58, 0x5a}, {0x5c, 0x5c},
    {0x5e, 0x5e}, {0x72, 0x72}, {0x78, 0x79}, {0x8c, 0x8c}, {0x8e, 0x8e}, {0x90, 0x93},
    {0x96, 0x9f}, {0xa6, 0xaf}, {0xb0, 0xb1}, {0xb4, 0xbf}, {0xcb, 0xcd}, {0xcf, 0xcf},
    {0xd2, 0xd3}, {0xda, 0xdf}, {0xe0, 0xef}, {0xf2, 0xf3}, {0xf5, 0xf7},
};
static const struct op_range vex_0f3a_ops[] = {
    {0x00, 0x02}, {0x04, 0x06}, {0x08, 0x0f}, {0x14, 0x19}, {0x1d, 0x1d},
    {0x20, 0x22}, {0x30, 0x33}, {0x38, 0x39}, {0x40, 0x42}, {0x44, 0x44},
    {0x46, 0x46}, {0x48, 0x4c}, {0x5c, 0x5f}, {0x60, 0x63}, {0x68, 0x6f},
    {0x78, 0x7f}, {0xce, 0xcf}, {0xde, 0xdf}, {0xf0, 0xf0},
};

/* In map 0f (VEX, EVEX and legacy alike) these take an imm8 after the ModRM operand. */
static bool map_0f_has_imm8(uint8_t op)
{
	return (op >= 0x70 && op <= 0x73) || (op >= 0xc2 && op <= 0xc6 && op != 0xc3);
}

static const char *const arith_names[8] = {"add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"};
static const char *const shift_names[8] = {"rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar"};
static const char *const grp3_names[8] = {"test", "test", "not", "neg",
					  "mul",  "imul", "div", "idiv"};

static struct opcode_info op_info(bool modrm, enum imm_kind imm, enum write_rule rule,
				  uint16_t fixed, const char *mnemonic)
{
	return (struct opcode_info){.valid = true,
				    .modrm = modrm,
				    .imm = imm,
				    .rule = rule,
				    .fixed_writes = fixed,
				    .mnemonic = mnemonic};
}

static struct opcode_info flow_info(enum x86_insn_kind kind, enum imm_kind imm, uint16_t fixed,
				    const char *mnemonic)
{
	struct opcode_info info = op_info(false, imm, WR_NONE, fixed, mnemonic);

	info.kind = kind;
	return info;
}

/* The one-byte map, before ModRM is known. Prefixes, REX, 0f, VEX and EVEX never get here. */
static struct opcode_info one_byte_info(uint8_t op)
{
	struct opcode_info info = {0};

	if (op < 0x40) {
		const char *name = arith_names[op >> 3];
		bool is_cmp = (op >> 3) == 7;

		switch (op & 7) {
		case 0:
		case 1:
			info = op_info(true, IMM_NONE, is_cmp ? WR_NONE : WR_RM, 0, name);
			info.byte_operands = (op & 7) == 0;
			return info;
		case 2:
		case 3:
			info = op_info(true, IMM_NONE, is_cmp ? WR_NONE : WR_REG, 0, name);
			info.byte_operands = (op & 7) == 2;
			return info;
		case 4:
			return op_info(false, IMM_8, WR_NONE, is_cmp ? 0 : BIT(RAX), name);
		case 5:
			return op_info(false, IMM_Z, WR_NONE, is_cmp ? 0 : BIT(RAX), name);
		default: /* push/pop of segments, daa, das, aaa, aas: invalid in 64-bit mode */
			return info;
		}
	}
	if (op >= 0x50 && op <= 0x57) {
		info = op_info(false, IMM_NONE, WR_NONE, BIT(RSP), "push");
		info.kind = X86_INSN_PUSH_REG;
		return info;
	}
	if (op >= 0x58 && op <= 0x5f)
		return op_info(false, IMM_NONE, WR_OPREG, BIT(RSP), "pop");
	if (op >= 0x70 && op <= 0x7f)
		return flow_info(X86_INSN_JCC_REL, REL_8, 0, "jcc");
	if (op >= 0x91 && op <= 0x97)
		return op_info(false, IMM_NONE, WR_OPREG, BIT(RAX), "xchg");
	if (op >= 0xb0 && op <= 0xb7) {
		info = op_info(false, IMM_8, WR_OPREG, 0, "mov");
		info.byte_operands = true;
		return info;
	}
	if (op >= 0xb8 && op <= 0xbf)
		return op_info(false, IMM_V, WR_OPREG, 0, "mov");
	if (op >= 0xd8 && op <= 0xdf) /* x87; fnstsw %ax is handled once ModRM is known */
		return op_info(true, IMM_NONE, WR_NONE, 0, "x87");
	if (op >= 0xf8 && op <= 0xfd)
		return op_info(false, IMM_NONE, WR_NONE, 0, "flag");

	switch (op) {
	case 0x63:
		return op_info(true, IMM_NONE, WR_REG, 0, "movsxd");
	case 0x68:
		return op_info(false, IMM_Z, WR_NONE, BIT(RSP), "push");
	case 0x69:
		return op_info(true, IMM_Z, WR_REG, 0, "imul");
	case 0x6a:
		return op_info(false, IMM_8, WR_NONE, BIT(RSP), "push");
	case 0x6b:
		return op_info(true, IMM_8, WR_REG, 0, "imul");
	case 0x6c:
	case 0x6d:
	case 0x6e:
	case 0x6f:
		return op_info(false, IMM_NONE, WR_ALL, 0, "ins/outs");
	case 0x80:
	case 0x81:
	case 0x83: /* group 1: the name and the write depend on ModRM.reg */
		info = op_info(true, op == 0x81 ? IMM_Z : IMM_8, WR_RM, 0, "group1");
		info.byte_operands = op == 0x80;
		return info;
	case 0x84:
	case 0x85:
		info = op_info(true, IMM_NONE, WR_NONE, 0, "test");
		info.byte_operands = op == 0x84;
		return info;
	case 0x86:
	case 0x87:
		info = op_info(true, IMM_NONE, WR_RM_REG, 0, "xchg");
		info.byte_operands = op == 0x86;
		return info;
	case 0x88:
	case 0x89:
		info = op_info(true, IMM_NONE, WR_RM, 0, "mov");
		info.byte_operands = op == 0x88;
		return info;
	case 0x8a:
	case 0x8b:
		info = op_info(true, IMM_NONE, WR_REG, 0, "mov");
		info.byte_operands = op == 0x8a;
		return info;
	case 0x8c:
		return op_info(true, IMM_NONE, WR_RM, 0, "mov");
	case 0x8d:
		return op_info(true, IMM_NONE, WR_REG, 0, "lea");
	case 0x8e: /* loads a segment register: not modelled */
		return op_info(true, IMM_NONE, WR_ALL, 0, "mov sreg");
	case 0x8f:
		return op_info(true, IMM_NONE, WR_RM, BIT(RSP), "pop");
	case 0x90: /* nop, pause or xchg %eax,%r8d: decided once REX is known */
		return op_info(false, IMM_NONE, WR_NONE, 0, "nop");
	case 0x98:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RAX), "cltq");
	case 0x99:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RDX), "cqto");
	case 0x9b:
		return op_info(false, IMM_NONE, WR_NONE, 0, "fwait");
	case 0x9c:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RSP), "pushf");
	case 0x9d:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RSP), "popf");
	case 0x9e:
		return op_info(false, IMM_NONE, WR_NONE, 0, "sahf");
	case 0x9f:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RAX), "lahf");
	case 0xa0:
	case 0xa1:
		return op_info(false, IMM_MOFFS, WR_NONE, BIT(RAX), "mov");
	case 0xa2:
	case 0xa3:
		return op_info(false, IMM_MOFFS, WR_NONE, 0, "mov");
	case 0xa4:
	case 0xa5:
	case 0xa6:
	case 0xa7:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RSI) | BIT(RDI) | BIT(RCX),
			       "movs/cmps");
	case 0xa8:
		return op_info(false, IMM_8, WR_NONE, 0, "test");
	case 0xa9:
		return op_info(false, IMM_Z, WR_NONE, 0, "test");
	case 0xaa:
	case 0xab:
	case 0xae:
	case 0xaf:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RDI) | BIT(RCX), "stos/scas");
	case 0xac:
	case 0xad:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RAX) | BIT(RSI) | BIT(RCX), "lods");
	case 0xc0:
	case 0xc1:
		info = op_info(true, IMM_8, WR_RM, 0, "shift");
		info.byte_operands = op == 0xc0;
		return info;
	case 0xc2:
		return flow_info(X86_INSN_RET, IMM_16, BIT(RSP), "ret");
	case 0xc3:
		return flow_info(X86_INSN_RET, IMM_NONE, BIT(RSP), "ret");
	case 0xc6:
		info = op_info(true, IMM_8, WR_RM, 0, "mov");
		info.byte_operands = true;
		return info;
	case 0xc7:
		return op_info(true, IMM_Z, WR_RM, 0, "mov");
	case 0xc8:
		return op_info(false, IMM_16_8, WR_NONE, BIT(RSP) | BIT(RBP), "enter");
	case 0xc9:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RSP) | BIT(RBP), "leave");
	case 0xca:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_16, X86_REGS_ALL, "lret");
	case 0xcb:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "lret");
	case 0xcc:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "int3");
	case 0xcd:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_8, X86_REGS_ALL, "int");
	case 0xcf:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "iret");
	case 0xd0:
	case 0xd1:
	case 0xd2:
	case 0xd3:
		info = op_info(true, IMM_NONE, WR_RM, 0, "shift");
		info.byte_operands = op == 0xd0 || op == 0xd2;
		return info;
	case 0xd7:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RAX), "xlat");
	case 0xe0:
	case 0xe1:
	case 0xe2:
		return flow_info(X86_INSN_BRANCH_REL, REL_8, BIT(RCX), "loop");
	case 0xe3:
		return flow_info(X86_INSN_BRANCH_REL, REL_8, 0, "jrcxz");
	case 0xe4:
	case 0xe5:
		return op_info(false, IMM_8, WR_NONE, BIT(RAX), "in");
	case 0xe6:
	case 0xe7:
		return op_info(false, IMM_8, WR_NONE, 0, "out");
	case 0xe8:
		return flow_info(X86_INSN_CALL_REL, REL_Z, BIT(RSP), "call");
	case 0xe9:
		return flow_info(X86_INSN_JMP_REL, REL_Z, 0, "jmp");
	case 0xeb:
		return flow_info(X86_INSN_JMP_REL, REL_8, 0, "jmp");
	case 0xec:
	case 0xed:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RAX), "in");
	case 0xee:
	case 0xef:
		return op_info(false, IMM_NONE, WR_NONE, 0, "out");
	case 0xf1:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "int1");
	case 0xf4:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "hlt");
	case 0xf5:
		return op_info(false, IMM_NONE, WR_NONE, 0, "cmc");
	case 0xf6:
	case 0xf7: /* group 3: test takes an immediate, the others none */
		info = op_info(true, IMM_NONE, WR_RM, 0, "group3");
		info.byte_operands = op == 0xf6;
		return info;
	case 0xfe:
		info = op_info(true, IMM_NONE, WR_RM, 0, "inc/dec");
		info.byte_operands = true;
		return info;
	case 0xff:
		return op_info(true, IMM_NONE, WR_RM, 0, "group5");
	default: /* 06/07/..., 60, 61, 82, 9a, ce, d4-d6, ea: invalid in 64-bit mode */
		return info;
	}
}

/* Two-byte map 0f without VEX. SSE/MMX/system instructions are given WR_ALL: their GPR
 * writes (movd, pextrw, cvtsd2si, rdrand, ...) are not worth modelling for placement. */
static struct opcode_info map_0f_info(const struct decoder *d, uint8_t op)
{
	struct opcode_info info = {0};

	if ((op >= 0x10 && op <= 0x17) || (op >= 0x28 && op <= 0x2f) ||
	    (op >= 0x50 && op <= 0x76) || (op >= 0x7c && op <= 0x7f) ||
	    (op >= 0xc2 && op <= 0xc6) || (op >= 0xd0 && op <= 0xfe))
		return op_info(true, map_0f_has_imm8(op) ? IMM_8 : IMM_NONE,
			       op == 0xc3 ? WR_NONE : WR_ALL, 0, op == 0xc3 ? "movnti" : "sse");
	if (op >= 0x40 && op <= 0x4f)
		return op_info(true, IMM_NONE, WR_REG, 0, "cmov");
	if (op >= 0x80 && op <= 0x8f)
		return flow_info(X86_INSN_JCC_REL, REL_Z, 0, "jcc");
	if (op >= 0x90 && op <= 0x9f) {
		info = op_info(true, IMM_NONE, WR_RM, 0, "setcc");
		info.byte_operands = true;
		return info;
	}
	if (op >= 0xc8 && op <= 0xcf)
		return op_info(false, IMM_NONE, WR_OPREG, 0, "bswap");
	if (op >= 0x19 && op <= 0x1f) /* hint nops; endbr, rdssp and MPX refined with ModRM */
		return op_info(true, IMM_NONE, WR_NONE, 0, "nop");

	switch (op) {
	case 0x00:
	case 0x01:
		return op_info(true, IMM_NONE, WR_ALL, 0, "system");
	case 0x02:
		return op_info(true, IMM_NONE, WR_REG, 0, "lar");
	case 0x03:
		return op_info(true, IMM_NONE, WR_REG, 0, "lsl");
	case 0x05:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "syscall");
	case 0x06:
	case 0x08:
	case 0x09:
	case 0x30:
		return op_info(false, IMM_NONE, WR_ALL, 0, "system");
	case 0x07:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "sysret");
	case 0x0b:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "ud2");
	case 0x0d:
	case 0x18:
		return op_info(true, IMM_NONE, WR_NONE, 0, "prefetch");
	case 0x0e:
	case 0x77:
		return op_info(false, IMM_NONE, WR_NONE, 0, "emms");
	case 0x20:
	case 0x21:
	case 0x22:
	case 0x23:
		info = op_info(true, IMM_NONE, WR_ALL, 0, "mov cr/dr");
		info.modrm_always_reg = true;
		return info;
	case 0x31:
	case 0x32:
	case 0x33:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RAX) | BIT(RDX), "rdtsc/rdmsr");
	case 0x34:
	case 0x35:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "sysenter");
	case 0x37:
		return op_info(false, IMM_NONE, WR_ALL, 0, "getsec");
	case 0x78: /* vmread; with 66/f2 it is SSE4a extrq/insertq with two immediates */
		if (d->opsize || d->repne)
			return info;
		return op_info(true, IMM_NONE, WR_ALL, 0, "vmread");
	case 0x79:
		return op_info(true, IMM_NONE, WR_ALL, 0, "vmwrite");
	case 0xa0:
	case 0xa1:
	case 0xa8:
	case 0xa9:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RSP), "push/pop seg");
	case 0xa2:
		return op_info(false, IMM_NONE, WR_NONE, BIT(RAX) | BIT(RBX) | BIT(RCX) | BIT(RDX),
			       "cpuid");
	case 0xa3:
		return op_info(true, IMM_NONE, WR_NONE, 0, "bt");
	case 0xa4:
	case 0xac:
		return op_info(true, IMM_8, WR_RM, 0, "shld/shrd");
	case 0xa5:
	case 0xad:
		return op_info(true, IMM_NONE, WR_RM, 0, "shld/shrd");
	case 0xaa:
		return flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "rsm");
	case 0xab:
	case 0xb3:
	case 0xbb:
		return op_info(true, IMM_NONE, WR_RM, 0, "bts/btr/btc");
	case 0xae:
		return op_info(true, IMM_NONE, WR_ALL, 0, "group15");
	case 0xaf:
		return op_info(true, IMM_NONE, WR_REG, 0, "imul");
	case 0xb0:
	case 0xb1:
		info = op_info(true, IMM_NONE, WR_RM, BIT(RAX), "cmpxchg");
		info.byte_operands = op == 0xb0;
		return info;
	case 0xb2:
	case 0xb4:
	case 0xb5:
		return op_info(true, IMM_NONE, WR_REG, 0, "lss/lfs/lgs");
	case 0xb6:
	case 0xb7:
		return op_info(true, IMM_NONE, WR_REG, 0, "movzx");
	case 0xbe:
	case 0xbf:
		return op_info(true, IMM_NONE, WR_REG, 0, "movsx");
	case 0xb8: /* popcnt needs f3; without it is IA-64 jmpe, not an x86-64 instruction */
		if (!d->rep)
			return info;
		return op_info(true, IMM_NONE, WR_REG, 0, "popcnt");
	case 0xb9:
		info = flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "ud1");
		info.modrm = true;
		return info;
	case 0xba:
		return op_info(true, IMM_8, WR_RM, 0, "bt");
	case 0xbc:
	case 0xbd:
		return op_info(true, IMM_NONE, WR_REG, 0, "bsf/bsr");
	case 0xc0:
	case 0xc1:
		info = op_info(true, IMM_NONE, WR_RM_REG, 0, "xadd");
		info.byte_operands = op == 0xc0;
		return info;
	case 0xc7:
		return op_info(true, IMM_NONE, WR_ALL, 0, "group9");
	case 0xff:
		info = flow_info(X86_INSN_OTHER_FLOW, IMM_NONE, X86_REGS_ALL, "ud0");
		info.modrm = true;
		return info;
	default: /* 04, 0a, 0c, 0f (3DNow!), 24-27, 36, 39, 3b-3f, 7a, 7b, a6, a7 */
		return info;
	}
}

static struct opcode_info three_byte_info(enum x86_opcode_map map, uint8_t op)
{
	struct opcode_info info = {0};

	if (map == X86_MAP_0F38 && IN_RANGES(legacy_0f38_ops, op))
		info = op_info(true, IMM_NONE, WR_ALL, 0, "sse");
	else if (map == X86_MAP_0F3A && IN_RANGES(legacy_0f3a_ops, op))
		info = op_info(true, IMM_8, WR_ALL, 0, "sse");
	return info;
}

/* Settles what ModRM.reg selects for group opcodes; false when the combination is undefined. */
static bool refine_with_modrm(const struct decoder *d, enum x86_opcode_map map, uint8_t op,
			      uint8_t modrm, struct opcode_info *info)
{
	unsigned int mod = modrm >> 6, reg = (modrm >> 3) & 7;

	if (map == X86_MAP_ONE_BYTE) {
		switch (op) {
		case 0x80:
		case 0x81:
		case 0x83:
			info->mnemonic = arith_names[reg];
			if (reg == 7)
				info->rule = WR_NONE;
			return true;
		case 0x8c:
			return reg <= 5;
		case 0x8d:
			return mod != 3;
		case 0x8f: /* other reg values are AMD XOP encodings */
			return reg == 0;
		case 0xc0:
		case 0xc1:
		case 0xd0:
		case 0xd1:
		case 0xd2:
		case 0xd3:
			info->mnemonic = shift_names[reg];
			return true;
		case 0xc6:
		case 0xc7:
			if (reg == 0)
				return true;
			if (modrm != 0xf8)
				return false;
			if (op == 0xc6) { /* xabort: leaves a transaction, if any */
				info->rule = WR_ALL;
				info->kind = X86_INSN_OTHER_FLOW;
				info->mnemonic = "xabort";
			} else {
				info->imm = REL_Z;
				info->rule = WR_ALL;
				info->kind = X86_INSN_BRANCH_REL;
				info->mnemonic = "xbegin";
			}
			return true;
		case 0xdf:
			if (modrm == 0xe0) /* fnstsw %ax */
				info->fixed_writes = BIT(RAX);
			return true;
		case 0xf6:
		case 0xf7:
			info->mnemonic = grp3_names[reg];
			if (reg <= 1) {
				info->imm = op == 0xf6 ? IMM_8 : IMM_Z;
				info->rule = WR_NONE;
			} else if (reg >= 4) {
				info->rule = WR_NONE;
				info->fixed_writes = op == 0xf6 ? BIT(RAX) : BIT(RAX) | BIT(RDX);
			}
			return true;
		case 0xfe:
			return reg <= 1;
		case 0xff:
			switch (reg) {
			case 0:
			case 1:
				info->mnemonic = "inc/dec";
				return true;
			case 2:
			case 4:
				info->mnemonic = reg == 2 ? "call indirect" : "jmp indirect";
				break;
			case 3:
			case 5:
				if (mod == 3)
					return false;
				info->mnemonic = reg == 3 ? "lcall" : "ljmp";
				break;
			case 6:
				info->mnemonic = "push";
				info->rule = WR_NONE;
				info->fixed_writes = BIT(RSP);
				return true;
			default:
				return false;
			}
			info->kind = X86_INSN_OTHER_FLOW;
			info->rule = WR_ALL;
			return true;
		default:
			return true;
		}
	}
	if (map != X86_MAP_0F)
		return true;
	switch (op) {
	case 0x00:
		return reg <= 5;
	case 0x1a:
	case 0x1b: /* MPX bound-register operations (hint nops without MPX): no GPR written */
		info->mnemonic = "bnd";
		return true;
	case 0x1e:
		if (d->rep && modrm == 0xfa) {
			info->kind = X86_INSN_ENDBR;
			info->mnemonic = "endbr64";
		} else if (d->rep && modrm == 0xfb) {
			info->kind = X86_INSN_ENDBR;
			info->mnemonic = "endbr32";
		} else if (d->rep && mod == 3 && reg == 1) {
			info->rule = WR_RM;
			info->mnemonic = "rdssp";
		} else {
			info->kind = X86_INSN_NOP;
		}
		return true;
	case 0x19:
	case 0x1c:
	case 0x1d:
	case 0x1f:
		info->kind = X86_INSN_NOP;
		return true;
	case 0xae: /* only the fences and the state saves are known to write no register */
		if (mod != 3 || (!d->rep && !d->repne && !d->opsize && reg >= 5))
			info->rule = WR_NONE;
		info->mnemonic = mod == 3 && reg >= 5 ? "fence" : "group15";
		return true;
	case 0xba:
		if (reg < 4)
			return false;
		if (reg == 4)
			info->rule = WR_NONE;
		return true;
	case 0xb2:
	case 0xb4:
	case 0xb5:
	case 0xc3:
		return mod != 3;
	default:
		return true;
	}
}

/* Reads SIB and displacement after a ModRM byte (32/64-bit addressing; 0x67 does not change
 * the layout in 64-bit mode). */
static int read_memory_operand(struct decoder *d, uint8_t modrm, struct x86_insn *insn)
{
	unsigned int mod = modrm >> 6, rm = modrm & 7;
	uint8_t sib;
	int err;

	if (mod == 3)
		return 0;
	if (rm == 4) {
		err = next_byte(d, &sib);
		if (err)
			return err;
		if (mod == 0 && (sib & 7) == 5)
			return skip_bytes(d, 4);
	} else if (mod == 0 && rm == 5) {
		insn->rip_relative = true;
		return skip_bytes(d, 4);
	}
	if (mod == 1)
		return skip_bytes(d, 1);
	if (mod == 2)
		return skip_bytes(d, 4);
	return 0;
}

static int read_immediate(struct decoder *d, enum imm_kind imm, struct x86_insn *insn)
{
	bool rex_w = d->rex & 0x08;
	int64_t rel;
	int err;

	switch (imm) {
	case IMM_NONE:
		return 0;
	case IMM_8:
		return skip_bytes(d, 1);
	case IMM_16:
		return skip_bytes(d, 2);
	case IMM_16_8:
		return skip_bytes(d, 3);
	case IMM_Z:
		return skip_bytes(d, d->opsize && !rex_w ? 2 : 4);
	case IMM_V:
		return skip_bytes(d, rex_w ? 8 : d->opsize ? 2 : 4);
	case IMM_MOFFS:
		return skip_bytes(d, d->addrsize ? 4 : 8);
	case REL_8:
	case REL_Z:
		/* Intel ignores 0x66 on near branches, AMD truncates to 16 bits: no one length,
		 * unless REX.W forces 64 bits as in the TLS sequence 66 66 48 e8 (call
		 * __tls_get_addr). */
		if (imm == REL_Z && d->opsize && !rex_w)
			return -EILSEQ;
		insn->rel_size = imm == REL_8 ? 1 : 4;
		err = read_field(d, insn->rel_size, &rel);
		if (err)
			return err;
		insn->has_target = true;
		insn->target = (int64_t)d->pos + rel;
		return 0;
	}
	return -EILSEQ;
}

static unsigned int decode_reg(const struct decoder *d, unsigned int low3, bool rex_bit,
			       bool byte_operands)
{
	if (rex_bit)
		return low3 + 8;
	if (byte_operands && !d->rex && low3 >= 4) /* ah, ch, dh, bh */
		return low3 - 4;
	return low3;
}

static uint16_t operand_writes(const struct decoder *d, const struct opcode_info *info, uint8_t op,
			       uint8_t modrm)
{
	bool rm_is_reg = (modrm >> 6) == 3 || info->modrm_always_reg;
	uint16_t writes = info->fixed_writes;
	unsigned int reg;

	switch (info->rule) {
	case WR_NONE:
		break;
	case WR_ALL:
		return X86_REGS_ALL;
	case WR_OPREG:
		reg = decode_reg(d, op & 7, d->rex & 0x01, info->byte_operands);
		writes |= X86_REG_BIT(reg);
		break;
	case WR_RM_REG:
	case WR_REG:
		reg = decode_reg(d, (modrm >> 3) & 7, d->rex & 0x04, info->byte_operands);
		writes |= X86_REG_BIT(reg);
		if (info->rule == WR_REG)
			break;
		/* fall through */
	case WR_RM:
		if (rm_is_reg) {
			reg = decode_reg(d, modrm & 7, d->rex & 0x01, info->byte_operands);
			writes |= X86_REG_BIT(reg);
		}
		break;
	}
	return writes;
}

/* The kernel's x86_nops[] for 64-bit (ASM_NOP_MAX 8 usable: longer ones carry a cs prefix,
 * which is_prefix_bad() refuses): exact byte matches are emulated like a jmp +0. */
static const uint8_t kernel_nops[9][8] = {
    [1] = {0x90},
    [2] = {0x66, 0x90},
    [3] = {0x0f, 0x1f, 0x00},
    [4] = {0x0f, 0x1f, 0x40, 0x00},
    [5] = {0x0f, 0x1f, 0x44, 0x00, 0x00},
    [6] = {0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00},
    [7] = {0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00},
    [8] = {0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},
};

static void set_kernel_handling(const struct decoder *d, struct x86_insn *insn)
{
	if (d->refused_prefix) {
		insn->kernel_refuses = true;
		return;
	}
	if (insn->length <= 8 && !memcmp(d->code, kernel_nops[insn->length], insn->length)) {
		insn->emulated = true;
		return;
	}
	if (insn->encoding != X86_ENC_LEGACY)
		return;
	switch (insn->kind) {
	case X86_INSN_PUSH_REG: /* push_setup_xol_ops: 50+r alone or behind exactly REX 0x41 */
		insn->emulated = insn->length == 1 || (insn->length == 2 && d->rex == 0x41);
		return;
	case X86_INSN_JMP_REL:
	case X86_INSN_JCC_REL:
	case X86_INSN_CALL_REL: /* branch_setup_xol_ops rejects any 0x66 prefix */
		if (d->opsize)
			insn->kernel_refuses = true;
		else
			insn->emulated = true;
		return;
	default:
		break;
	}
	/* Opcode 0x90 behind any prefixes is emulated as a nop, REX.B included, although
	 * 41 90 is xchg %eax,%r8d: the kernel then skips a real register exchange. */
	if (insn->map == X86_MAP_ONE_BYTE && insn->opcode == 0x90) {
		insn->emulated = true;
		insn->emulation_unsafe = d->rex & 0x01;
	}
}

static int decode_vex_evex(struct decoder *d, uint8_t first, struct x86_insn *insn)
{
	uint8_t payload[3], op, modrm;
	unsigned int payload_len = first == 0xc5 ? 1 : first == 0xc4 ? 2 : 3;
	unsigned int map;
	bool valid, imm8;
	int err;

	/* REX, 66, f2, f3 or lock before VEX/EVEX raise #UD. */
	if (d->rex || d->opsize || d->rep || d->repne || d->lock)
		return -EILSEQ;
	for (unsigned int i = 0; i < payload_len; i++) {
		err = next_byte(d, &payload[i]);
		if (err)
			return err;
	}
	if (first == 0xc5) {
		map = 1;
	} else if (first == 0xc4) {
		map = payload[0] & 0x1f;
	} else {
		/* Bit 3 of P0 and a clear bit 2 of P1 belong to APX/reserved encodings. */
		if ((payload[0] & 0x08) || !(payload[1] & 0x04))
			return -EILSEQ;
		map = payload[0] & 0x07;
	}
	if (map < 1 || map > 3)
		return -EILSEQ;
	err = next_byte(d, &op);
	if (err)
		return err;

	insn->encoding = first == 0x62 ? X86_ENC_EVEX : X86_ENC_VEX;
	insn->map = map == 1 ? X86_MAP_0F : map == 2 ? X86_MAP_0F38 : X86_MAP_0F3A;
	insn->opcode = op;
	insn->mnemonic = first == 0x62 ? "avx512" : "avx";
	insn->writes = X86_REGS_ALL; /* BMI, kmov, vmovd, vpextr* write GPRs: not modelled */

	if (first == 0x62) {
		/* EVEX lengths follow from the format alone (ModRM always; disp8 is scaled,
		 * not widened); the map 0f opcode 77 (vzeroupper) has no EVEX form. */
		valid = !(map == 1 && op == 0x77);
	} else if (map == 1) {
		valid = IN_RANGES(vex_0f_ops, op);
	} else if (map == 2) {
		valid = IN_RANGES(vex_0f38_ops, op);
	} else {
		valid = IN_RANGES(vex_0f3a_ops, op);
	}
	if (!valid)
		return -EILSEQ;
	if (first != 0x62 && map == 1 && op == 0x77) { /* vzeroupper / vzeroall */
		insn->mnemonic = "vzeroupper";
		return 0;
	}
	err = next_byte(d, &modrm);
	if (err)
		return err;
	insn->has_modrm = true;
	insn->modrm = modrm;
	err = read_memory_operand(d, modrm, insn);
	if (err)
		return err;
	imm8 = map == 3 || (map == 1 && map_0f_has_imm8(op));
	return imm8 ? skip_bytes(d, 1) : 0;
}

static int decode(struct decoder *d, struct x86_insn *insn)
{
	struct opcode_info info;
	uint8_t byte, op, modrm = 0;
	int err;

	err = next_byte(d, &byte);
	while (!err && is_legacy_prefix(byte)) {
		note_prefix(d, byte);
		err = next_byte(d, &byte);
	}
	if (err)
		return err;
	if ((byte & 0xf0) == 0x40) {
		d->rex = byte;
		err = next_byte(d, &byte);
		if (err)
			return err;
		/* A REX that is not last is ignored by the CPU; compilers never emit one. */
		if (is_legacy_prefix(byte) || (byte & 0xf0) == 0x40)
			return -EILSEQ;
	}
	insn->prefix_count = d->prefix_count;
	insn->rex = d->rex;

	if (byte == 0xc4 || byte == 0xc5 || byte == 0x62)
		return decode_vex_evex(d, byte, insn);

	if (byte == 0x0f) {
		err = next_byte(d, &op);
		if (err)
			return err;
		if (op == 0x38 || op == 0x3a) {
			insn->map = op == 0x38 ? X86_MAP_0F38 : X86_MAP_0F3A;
			err = next_byte(d, &op);
			if (err)
				return err;
			info = three_byte_info(insn->map, op);
		} else {
			insn->map = X86_MAP_0F;
			info = map_0f_info(d, op);
		}
	} else {
		op = byte;
		insn->map = X86_MAP_ONE_BYTE;
		info = one_byte_info(op);
	}
	if (!info.valid)
		return -EILSEQ;
	insn->opcode = op;

	if (info.modrm) {
		err = next_byte(d, &modrm);
		if (err)
			return err;
		insn->has_modrm = true;
		insn->modrm = modrm;
		if (!refine_with_modrm(d, insn->map, op, modrm, &info))
			return -EILSEQ;
		if (!info.modrm_always_reg) {
			err = read_memory_operand(d, modrm, insn);
			if (err)
				return err;
		}
	}
	err = read_immediate(d, info.imm, insn);
	if (err)
		return err;

	insn->kind = info.kind;
	insn->mnemonic = info.mnemonic;
	insn->writes = operand_writes(d, &info, op, modrm);
	if (insn->map == X86_MAP_ONE_BYTE && op == 0x90) {
		if (d->rex & 0x01) {
			insn->mnemonic = "xchg";
			insn->writes = BIT(RAX) | BIT(R8);
		} else {
			insn->kind = X86_INSN_NOP;
			insn->mnemonic = d->rep ? "pause" : "nop";
		}
	}
	if (insn->kind == X86_INSN_NOP && insn->map == X86_MAP_0F && op == 0x1f)
		insn->mnemonic = "nop";
	if (insn->map == X86_MAP_ONE_BYTE && op >= 0x50 && op <= 0x5f)
		insn->reg = (int8_t)decode_reg(d, op & 7, d->rex & 0x01, false);
	return 0;
}

int x86_decode(const uint8_t *code, size_t avail, struct x86_insn *insn)
{
	struct decoder d = {.code = code, .avail = avail};
	int err;

	if (!code || !insn)
		return -EINVAL;
	memset(insn, 0, sizeof(*insn));
	insn->reg = -1;
	insn->mnemonic = "?";
	err = decode(&d, insn);
	if (err)
		return err;
	insn->length = (uint8_t)d.pos;
	set_kernel_handling(&d, insn);
	return 0;
}

void x86_insn_describe(const struct x86_insn *insn, char *buf, size_t size)
{
	if (!buf || !size)
		return;
	switch (insn->kind) {
	case X86_INSN_JMP_REL:
	case X86_INSN_JCC_REL:
	case X86_INSN_CALL_REL:
		snprintf(buf, size, "%s rel%u", insn->mnemonic, insn->rel_size * 8u);
		return;
	default:
		break;
	}
	if (insn->reg >= 0)
		snprintf(buf, size, "%s %%%s", insn->mnemonic,
			 x86_reg_name((unsigned int)insn->reg));
	else
		snprintf(buf, size, "%s", insn->mnemonic);
}
