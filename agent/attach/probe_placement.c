/* Chooses a cheap uprobe offset near a function's entry (see probe_placement.h for the rule).
 *
 * Everything here errs towards +0: a probe at +0 is only slow, a probe at a wrong offset loses
 * or duplicates events or reads clobbered arguments. So the walk stops at the first
 * instruction it cannot decode or does not understand, and a site past +0 is accepted only
 * after every relative branch of the whole function has been decoded and found to land
 * outside the skipped bytes. */
#include "attach/probe_placement.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "attach/x86_decode.h"

static void set_reason(struct probe_placement *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_reason(struct probe_placement *out, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(out->reason, sizeof(out->reason), fmt, args);
	va_end(args);
}

static void explain_decode_error(struct probe_placement *out, int err, const uint8_t *code,
				 size_t pos, size_t limit, const char *while_doing)
{
	char bytes[3 * 4] = "";
	size_t shown = limit - pos < 4 ? limit - pos : 4, used = 0;

	for (size_t i = 0; i < shown; i++)
		used += (size_t)snprintf(bytes + used, sizeof(bytes) - used, "%s%02x", i ? " " : "",
					 code[pos + i]);
	if (err == -ENODATA)
		set_reason(out, "the instruction at +%zu is cut off after %zu bytes (%s)%s", pos,
			   limit - pos, bytes, while_doing);
	else
		set_reason(out, "cannot decode the instruction at +%zu (%s)%s", pos, bytes,
			   while_doing);
}

/* NULL when the probe may move past insn; else why not, as a phrase after "<insn> at +N".
 * kept: the registers that must reach the probe unchanged. */
static const char *blocker(const struct x86_insn *insn, uint16_t kept, char *buf, size_t size)
{
	uint16_t blocking = insn->writes & kept;

	switch (insn->kind) {
	case X86_INSN_OTHER:
	case X86_INSN_NOP:
	case X86_INSN_ENDBR:
		break;
	case X86_INSN_JMP_REL:
	case X86_INSN_JCC_REL:
	case X86_INSN_CALL_REL:
		if (insn->kernel_refuses)
			return "is a branch the kernel refuses to probe (0x66 or segment prefix)";
		return "is a branch the kernel does not emulate";
	case X86_INSN_PUSH_REG:
		if (!insn->emulated)
			return "is a push the kernel single-steps and that writes %rsp";
		break;
	default:
		return "ends the first basic block";
	}
	if (insn->writes == X86_REGS_ALL)
		return "may write registers this decoder does not track";
	if (blocking) {
		for (unsigned int reg = 0; reg < 16; reg++) {
			if (blocking & X86_REG_BIT(reg)) {
				snprintf(buf, size,
					 "writes %%%s before the first emulated instruction",
					 x86_reg_name(reg));
				return buf;
			}
		}
	}
	return NULL;
}

/* Walks from +0 to the first emulated instruction; false (reason set) when one is not
 * reachable without skipping something that matters. */
static bool find_emulated_site(const uint8_t *code, size_t limit, size_t func_size, uint16_t kept,
			       struct probe_placement *out, size_t *site,
			       struct x86_insn *site_insn, unsigned int *skipped)
{
	struct x86_insn insn;
	char desc[48], why_buf[80];
	const char *why;
	size_t pos = 0;
	int err;

	for (unsigned int count = 0;; count++) {
		if (pos == limit) {
			set_reason(out, "no emulated instruction before +%zu, the end of the %s",
				   pos, limit == func_size ? "function" : "bytes read");
			return false;
		}
		err = x86_decode(code + pos, limit - pos, &insn);
		if (err) {
			explain_decode_error(out, err, code, pos, limit,
					     " before the first emulated instruction");
			return false;
		}
		if (insn.emulated && !insn.emulation_unsafe) {
			*site = pos;
			*site_insn = insn;
			*skipped = count;
			return true;
		}
		x86_insn_describe(&insn, desc, sizeof(desc));
		why = blocker(&insn, kept, why_buf, sizeof(why_buf));
		if (why) {
			set_reason(out, "%s at +%zu %s", desc, pos, why);
			return false;
		}
		if (count + 1 > PROBE_PLACEMENT_MAX_SKIP_INSNS ||
		    pos + insn.length > PROBE_PLACEMENT_MAX_SKIP_BYTES) {
			set_reason(out,
				   "no emulated instruction within the first %u instructions "
				   "or %u bytes",
				   PROBE_PLACEMENT_MAX_SKIP_INSNS, PROBE_PLACEMENT_MAX_SKIP_BYTES);
			return false;
		}
		pos += insn.length;
	}
}

/* True when no relative branch of the function lands in (0, site]: landing there would run
 * the probe twice (once from the entry, once from the branch) or skip it. */
static bool no_branch_into_prologue(const uint8_t *code, size_t code_len, size_t func_size,
				    size_t site, const char *site_desc, struct probe_placement *out)
{
	struct x86_insn insn;
	char desc[48];
	size_t pos = 0;
	int err;

	if (func_size == 0) {
		set_reason(out,
			   "function size unknown: cannot rule out branches to %s at +%zu "
			   "or the bytes before it",
			   site_desc, site);
		return false;
	}
	if (code_len < func_size) {
		set_reason(out,
			   "only %zu of the function's %zu bytes were read: cannot rule out "
			   "branches to %s at +%zu",
			   code_len, func_size, site_desc, site);
		return false;
	}
	while (pos < func_size) {
		err = x86_decode(code + pos, func_size - pos, &insn);
		if (err) {
			explain_decode_error(out, err, code, pos, func_size,
					     " while checking the function for branches");
			return false;
		}
		if (insn.has_target) {
			int64_t target = (int64_t)pos + insn.target;

			if (target > 0 && target <= (int64_t)site) {
				x86_insn_describe(&insn, desc, sizeof(desc));
				set_reason(out,
					   "%s at +%zu branches to +%" PRId64 ", inside the "
					   "prologue skipped to reach %s at +%zu",
					   desc, pos, target, site_desc, site);
				return false;
			}
		}
		pos += insn.length;
	}
	return true;
}

int probe_placement_choose(const uint8_t *code, size_t code_len, size_t func_size,
			   uint16_t read_regs, struct probe_placement *out)
{
	uint16_t kept = read_regs | PROBE_PLACEMENT_KEPT_REGS;
	struct x86_insn first, site_insn;
	size_t limit = code_len, site;
	unsigned int skipped;
	char site_desc[48];
	int err;

	if (!out || (!code && code_len))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (func_size && func_size < limit)
		limit = func_size;
	if (limit == 0) {
		snprintf(out->insn_desc, sizeof(out->insn_desc), "none");
		set_reason(out, "no code bytes to decode");
		return 0;
	}

	err = x86_decode(code, limit, &first);
	if (err) {
		snprintf(out->insn_desc, sizeof(out->insn_desc), "undecodable");
		explain_decode_error(out, err, code, 0, limit, "");
		return 0;
	}
	x86_insn_describe(&first, out->insn_desc, sizeof(out->insn_desc));
	if (first.emulated) {
		out->emulated = true;
		if (first.emulation_unsafe)
			set_reason(out,
				   "the kernel emulates %s at +0 as a nop: a probe there changes "
				   "what the program does",
				   out->insn_desc);
		return 0;
	}

	if (!find_emulated_site(code, limit, func_size, kept, out, &site, &site_insn, &skipped))
		goto stay_at_entry;
	x86_insn_describe(&site_insn, site_desc, sizeof(site_desc));
	if (!no_branch_into_prologue(code, code_len, func_size, site, site_desc, out))
		goto stay_at_entry;

	out->offset = (uint32_t)site;
	out->emulated = true;
	out->skipped_insns = (uint8_t)skipped;
	snprintf(out->insn_desc, sizeof(out->insn_desc), "%s", site_desc);
	out->reason[0] = '\0';
	return 0;

stay_at_entry:
	/* Said once: a refused branch at +0 already explains itself. */
	if (first.kernel_refuses && !strstr(out->reason, "refuses")) {
		char why[sizeof(out->reason)];

		snprintf(why, sizeof(why), "%s", out->reason);
		set_reason(out, "the kernel refuses uprobes on %s at +0; %s", out->insn_desc, why);
	}
	return 0;
}
