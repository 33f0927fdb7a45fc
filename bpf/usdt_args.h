/* Where a USDT probe's arguments are, as the BPF side reads them: shared by the agent, which
 * parses the SystemTap SDT notes of a file into these specs (agent/attach/usdt_notes.h), and the
 * BPF program, which fetches the values with usdt_arg_fetch at the probe. x86-64 only: a
 * register is named by its offset in the kernel's struct pt_regs, which is what a uprobe
 * program's context points to.
 *
 * Only fixed-width kernel UAPI types here, so both sides see identical layouts. The BPF part
 * at the end needs struct pt_regs and the helpers: include this after vmlinux.h and
 * <bpf/bpf_helpers.h>. */
#ifndef ALLOCSCOPE_USDT_ARGS_H
#define ALLOCSCOPE_USDT_ARGS_H

#include <linux/types.h>

/* Arguments a probe spec carries: otel_memory:alloc(ptr, size, weighted_bytes) has three. */
#define USDT_PROBE_MAX_ARGS 3

/* Offsets of the x86-64 user registers in struct pt_regs (arch/x86/include/asm/ptrace.h), the
 * layout a uprobe program's context has; each slot is 8 bytes. Checked against the kernel's
 * struct on the BPF side and against <asm/ptrace.h> in the agent. */
enum usdt_reg_offset {
	USDT_REG_R15 = 0,
	USDT_REG_R14 = 8,
	USDT_REG_R13 = 16,
	USDT_REG_R12 = 24,
	USDT_REG_BP = 32,
	USDT_REG_BX = 40,
	USDT_REG_R11 = 48,
	USDT_REG_R10 = 56,
	USDT_REG_R9 = 64,
	USDT_REG_R8 = 72,
	USDT_REG_AX = 80,
	USDT_REG_CX = 88,
	USDT_REG_DX = 96,
	USDT_REG_SI = 104,
	USDT_REG_DI = 112,
	USDT_REG_ORIG_AX = 120,
	USDT_REG_IP = 128,
	USDT_REG_CS = 136,
	USDT_REG_FLAGS = 144,
	USDT_REG_SP = 152,
	USDT_REG_SS = 160,
	USDT_PT_REGS_SIZE = 168,
};

enum usdt_arg_kind {
	USDT_ARG_CONST = 1, /* value_or_offset itself ("$imm") */
	USDT_ARG_REG,	    /* the register at reg_offset ("%reg") */
	/* User memory at the register's value + value_or_offset ("off(%reg)"). A rip-relative
	 * operand ("sym(%rip)") is this with USDT_REG_IP: when a uprobe's handler runs, ip holds
	 * the probe's own address, so the agent stores the distance from the probe to the
	 * memory and no per-process address is needed. */
	USDT_ARG_REG_DEREF,
};

/* One argument. The value read is cut to size bytes, then sign- or zero-extended to 64 bits. */
struct usdt_arg_spec {
	__u64 value_or_offset; /* CONST: the value; REG_DEREF: added to the register */
	__s32 reg_offset;      /* REG, REG_DEREF: enum usdt_reg_offset (+1 for %ah..%dh) */
	__u8 kind;	       /* enum usdt_arg_kind; 0 for an unused slot */
	__u8 size;	       /* 1, 2, 4 or 8 */
	__u8 is_signed;	       /* 1: sign-extend from size bytes */
	__u8 reserved;
};

/* The arguments of one probe site, as a BPF program keeps them (in a map or .rodata). */
struct usdt_probe_spec {
	struct usdt_arg_spec args[USDT_PROBE_MAX_ARGS];
	__u32 n_args;
	__u32 reserved;
};

#if defined(__bpf__)

_Static_assert(__builtin_offsetof(struct pt_regs, r15) == USDT_REG_R15, "pt_regs layout");
_Static_assert(__builtin_offsetof(struct pt_regs, bp) == USDT_REG_BP, "pt_regs layout");
_Static_assert(__builtin_offsetof(struct pt_regs, ax) == USDT_REG_AX, "pt_regs layout");
_Static_assert(__builtin_offsetof(struct pt_regs, di) == USDT_REG_DI, "pt_regs layout");
_Static_assert(__builtin_offsetof(struct pt_regs, ip) == USDT_REG_IP, "pt_regs layout");
_Static_assert(__builtin_offsetof(struct pt_regs, sp) == USDT_REG_SP, "pt_regs layout");
_Static_assert(sizeof(struct pt_regs) == USDT_PT_REGS_SIZE, "pt_regs layout");

/* No errno.h in BPF programs. */
#define USDT_EINVAL 22

/* Reads the argument spec describes at the probe whose registers are ctx into *out (0 on any
 * failure). 0, -USDT_EINVAL for a malformed spec, or the helper's error when the register or
 * the user memory cannot be read. The register is copied with bpf_probe_read_kernel because
 * the verifier refuses context loads at an offset it does not know. */
static __always_inline int usdt_arg_fetch(struct pt_regs *ctx, const struct usdt_arg_spec *spec,
					  __u64 *out)
{
	__u32 size = spec->size;
	__u64 value = 0, address;
	__u32 shift;
	long err;

	*out = 0;
	if (size == 0 || size > 8)
		return -USDT_EINVAL;
	switch (spec->kind) {
	case USDT_ARG_CONST:
		value = spec->value_or_offset;
		break;
	case USDT_ARG_REG:
	case USDT_ARG_REG_DEREF:
		if (spec->reg_offset < 0 || spec->reg_offset > USDT_PT_REGS_SIZE - 8)
			return -USDT_EINVAL;
		err = bpf_probe_read_kernel(&value, sizeof(value), (void *)ctx + spec->reg_offset);
		if (err)
			return err;
		if (spec->kind == USDT_ARG_REG)
			break;
		/* Only size bytes: the argument may end right before an unmapped page. x86 is
		 * little-endian, so they land in value's low bytes. */
		address = value + spec->value_or_offset;
		value = 0;
		err = bpf_probe_read_user(&value, size, (const void *)(unsigned long)address);
		if (err)
			return err;
		break;
	default:
		return -USDT_EINVAL;
	}
	shift = 64 - size * 8;
	if (spec->is_signed)
		value = (__u64)((__s64)(value << shift) >> shift);
	else
		value = (value << shift) >> shift;
	*out = value;
	return 0;
}

#endif /* __bpf__ */

#endif
