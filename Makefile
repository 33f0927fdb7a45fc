# allocscope build: the BPF object (clang, bpf target, CO-RE) is embedded into the agent through
# a bpftool skeleton; everything lands in build/. `make V=1` shows the commands.
#
#   make            build/allocscope
#   make test       unit tests, then end-to-end tests with real BPF (as root)
#   make bench      the overhead benchmark (as root); figures go in docs/performance.md
#   make demo       profile the bundled demo workload and print the top table (as root)
#   make install    binary, systemd unit and reference configuration under $(PREFIX)

BUILD     ?= build
CC        ?= cc
CLANG     ?= clang
BPFTOOL   ?= bpftool
PREFIX    ?= /usr/local
VERSION   := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GIT_REV   := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

CFLAGS    ?= -O2 -g
CFLAGS    += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -fno-strict-aliasing
CPPFLAGS  += -D_GNU_SOURCE -Iagent -Ibpf -I$(BUILD)
LDLIBS    += -lbpf -ldw -lelf -ldebuginfod -lyaml -lcurl -lz -lm -lpthread -lstdc++
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror -Ibpf \
	      -I/usr/include/$(shell $(CC) -dumpmachine)

ifeq ($(V),1)
Q =
msg =
else
Q = @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

AGENT_SRCS := $(shell find agent -name '*.c' ! -path agent/main.c | sort)
AGENT_OBJS := $(AGENT_SRCS:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ   := $(BUILD)/obj/agent/main.o
BPF_HDRS   := $(wildcard bpf/*.h)
SKELETON   := $(BUILD)/alloc.skel.h
DEPS_OK    := $(BUILD)/.deps-ok

UNIT_SRCS  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

WORKLOAD_SRCS := $(sort $(wildcard tests/workloads/*.c))
WORKLOAD_BINS := $(WORKLOAD_SRCS:tests/workloads/%.c=$(BUILD)/workloads/%) \
		 $(BUILD)/workloads/alloc_sites_static $(BUILD)/workloads/alloc_sites_nofp \
		 $(BUILD)/workloads/cxx_sites
# Workloads keep frame pointers: frame-pointer stacks are what this build unwinds.
WORKLOAD_CFLAGS := -O1 -g -fno-omit-frame-pointer -fno-inline -Wall -Werror

.PHONY: all test unit e2e bench demo install clean check-deps FORCE
.DELETE_ON_ERROR:

all: $(BUILD)/allocscope

check-deps: $(DEPS_OK)
$(DEPS_OK): scripts/check-deps
	$(Q)scripts/check-deps
	@mkdir -p $(@D) && touch $@

$(BUILD)/alloc.bpf.o: bpf/alloc.bpf.c $(BPF_HDRS) | $(DEPS_OK)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(SKELETON): $(BUILD)/alloc.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name alloc_bpf > $@

# Version and revision, rewritten only when they change so that a new commit rebuilds exactly
# the files that print them (their dependency files name this header).
BUILD_INFO := $(BUILD)/build_info.h
$(BUILD_INFO): FORCE
	$(Q)mkdir -p $(@D)
	$(Q)printf '#define ALLOCSCOPE_VERSION "%s"\n#define ALLOCSCOPE_GIT_REV "%s"\n' \
		'$(VERSION)' '$(GIT_REV)' > $@.new
	$(Q)if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi

$(BUILD)/obj/%.o: %.c | $(SKELETON) $(BUILD_INFO)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/allocscope: $(MAIN_OBJ) $(AGENT_OBJS)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(AGENT_OBJS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) $< $(AGENT_OBJS) $(LDLIBS) -o $@

$(BUILD)/workloads/%: tests/workloads/%.c | $(DEPS_OK)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(WORKLOAD_CFLAGS) $< -o $@ -lpthread

# The same sites linked statically: glibc's allocator inside the executable.
$(BUILD)/workloads/alloc_sites_static: tests/workloads/alloc_sites.c | $(DEPS_OK)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(WORKLOAD_CFLAGS) -static $< -o $@ -lpthread

# Built as distributions build: -O2, no frame pointers; only CFI unwinding gets these right.
NOFP_CFLAGS := -O2 -g -fomit-frame-pointer -Wall -Werror
$(BUILD)/workloads/alloc_sites_nofp: tests/workloads/alloc_sites.c | $(DEPS_OK)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(NOFP_CFLAGS) $< -o $@ -lpthread

$(BUILD)/workloads/cxx_sites: tests/workloads/cxx_sites.cc | $(DEPS_OK)
	$(call msg,CXX,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CXX) $(NOFP_CFLAGS) $< -o $@

-include tests/unit/fixtures.mk

# The benchmark's floor: an empty uprobe program and its loader.
$(BUILD)/bench/empty_probe.bpf.o: tests/bench/empty_probe.bpf.c bpf/vmlinux.h | $(DEPS_OK)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/bench/empty_probe.skel.h: $(BUILD)/bench/empty_probe.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name empty_probe_bpf > $@

$(BUILD)/bench/empty_probe: tests/bench/empty_probe.c $(BUILD)/bench/empty_probe.skel.h
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) -I$(BUILD)/bench $< -lbpf -o $@

unit: $(UNIT_BINS) $(UNIT_FIXTURES)
	$(Q)tests/run-unit $(UNIT_BINS)

e2e: $(BUILD)/allocscope $(WORKLOAD_BINS)
	$(Q)python3 tests/e2e/run.py

test: all $(UNIT_BINS) $(UNIT_FIXTURES) $(WORKLOAD_BINS)
	$(Q)tests/run-all

bench: $(BUILD)/allocscope $(WORKLOAD_BINS) $(BUILD)/bench/empty_probe
	$(Q)python3 tests/bench/overhead.py
	$(Q)python3 tests/bench/agent.py

demo: $(BUILD)/allocscope $(WORKLOAD_BINS)
	$(Q)DEMO_PROFILE=$(BUILD)/demo-alloc.pb.gz scripts/demo

# The unit names /usr/local/bin/allocscope; another PREFIX gets the path rewritten. An
# existing /etc/allocscope/allocscope.yaml is kept: the reference goes next to it as .default.
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
CONFIG_DIR       ?= /etc/allocscope
install: $(BUILD)/allocscope
	install -D -m 0755 $(BUILD)/allocscope $(DESTDIR)$(PREFIX)/bin/allocscope
	install -d -m 0755 $(DESTDIR)$(SYSTEMD_UNIT_DIR) $(DESTDIR)$(CONFIG_DIR)
	sed 's|/usr/local/|$(PREFIX)/|g' deploy/systemd/allocscope.service \
		> $(DESTDIR)$(SYSTEMD_UNIT_DIR)/allocscope.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/allocscope.service
	install -m 0644 config/allocscope.yaml $(DESTDIR)$(CONFIG_DIR)/allocscope.yaml.default
	test -e $(DESTDIR)$(CONFIG_DIR)/allocscope.yaml || \
		install -m 0644 config/allocscope.yaml $(DESTDIR)$(CONFIG_DIR)/allocscope.yaml
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/allocscope/README.md
	@echo "installed; start with: systemctl daemon-reload && systemctl enable --now allocscope"

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
