// SPDX-License-Identifier: GPL-2.0
/* The benchmark's floor: a uprobe program that does nothing, so what it costs is the trap. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("uprobe")
int empty_probe(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
