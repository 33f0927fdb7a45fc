# allocscope build: the BPF object (clang, bpf target, CO-RE) is embedded into the agent through
# a bpftool skeleton; everything lands in build/. `make V=1` shows the commands.
#
#   make            build/allocscope
#   make test       unit tests, a short fuzz run over the seed corpora, then end-to-end tests
#                   with real BPF (as root)
#   make fuzz       each libFuzzer harness for FUZZ_SECONDS (default 60; docs/fuzzing.md)
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
# libbpf (1.4 or newer; Debian 12 has it in bookworm-backports) is linked statically, so the
# hosts and the runtime image need no backports; what it needs (libelf, zlib) stays dynamic.
LIBBPF_A  ?= $(shell pkg-config --variable=libdir libbpf 2>/dev/null)/libbpf.a
LDLIBS    += $(LIBBPF_A) -ldw -lelf -ldebuginfod -lyaml -lcurl -lz -lm -lpthread -liberty -lstdc++
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
		 $(BUILD)/workloads/cxx_sites $(BUILD)/workloads/cxx_deep
# Workloads keep frame pointers: frame-pointer stacks are what this build unwinds.
WORKLOAD_CFLAGS := -O1 -g -fno-omit-frame-pointer -fno-inline -Wall -Werror

.PHONY: all test unit e2e workloads fuzz fuzz-smoke bench demo install clean check-deps FORCE
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

# The flame graph page (agent/read/flamegraph_page.html), compiled into allocscope as bytes.
$(BUILD)/flamegraph_page.h: agent/read/flamegraph_page.html
	$(call msg,GEN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)od -An -v -tx1 $< | sed -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g' > $@
$(BUILD)/obj/agent/read/flamegraph_html.o $(BUILD)/fuzz/obj/agent/read/flamegraph_html.o: \
	$(BUILD)/flamegraph_page.h

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

$(BUILD)/workloads/cxx_sites $(BUILD)/workloads/cxx_deep: $(BUILD)/workloads/%: \
		tests/workloads/%.cc | $(DEPS_OK)
	$(call msg,CXX,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CXX) $(NOFP_CFLAGS) $< -o $@

# ---- workloads on other allocators: tests/workloads/allocator_sites.cc, one build each ----
# (Debian's libjemalloc-dev, libgoogle-perftools-dev, libmimalloc-dev). sites_rjem links a copy
# of libjemalloc_pic.a whose public symbols carry Rust's _rjem_ prefix, without its operator
# new (a Rust build has none), beside glibc's malloc.
JEMALLOC_PIC := /usr/lib/x86_64-linux-gnu/libjemalloc_pic.a
RJEM_SYMBOLS := malloc calloc realloc free posix_memalign aligned_alloc memalign valloc mallocx \
		rallocx xallocx sallocx dallocx sdallocx nallocx mallctl mallctlnametomib \
		mallctlbymib malloc_stats_print malloc_usable_size malloc_message malloc_conf \
		malloc_conf_2_conf_harder
ALLOCATOR_SITES := $(addprefix $(BUILD)/workloads/sites_,jemalloc jemalloc_static tcmalloc \
		   mimalloc rjem)
WORKLOAD_BINS += $(ALLOCATOR_SITES)
sites_link_jemalloc := -ljemalloc
sites_link_jemalloc_static := $(JEMALLOC_PIC) -lpthread -ldl -lm
sites_link_tcmalloc := -ltcmalloc_minimal
sites_link_mimalloc := -lmimalloc
sites_link_rjem := $(BUILD)/workloads/librjem.a -lpthread -ldl -lm
sites_define = SITES_$(shell echo $(patsubst %_static,%,$(1)) | tr a-z A-Z)

$(BUILD)/workloads/librjem.a: $(JEMALLOC_PIC) | $(DEPS_OK)
	$(call msg,OBJCOPY,$@)
	$(Q)mkdir -p $(@D)
	$(Q)printf '%s _rjem_%s\n' $(foreach s,$(RJEM_SYMBOLS),$(s) $(s)) > $@.syms
	$(Q)objcopy --redefine-syms=$@.syms $< $@
	$(Q)ar d $@ jemalloc_cpp.pic.o

$(BUILD)/workloads/sites_rjem: $(BUILD)/workloads/librjem.a
$(ALLOCATOR_SITES): $(BUILD)/workloads/sites_%: tests/workloads/allocator_sites.cc | $(DEPS_OK)
	$(call msg,CXX,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CXX) $(WORKLOAD_CFLAGS) -D$(call sites_define,$*) $< -o $@ $(sites_link_$*)
# tests/workloads/aligned_sites.c: every C entry point at small and large alignments, built as
# distributions build (-O2, no frame pointers) on glibc and on each other allocator. jemalloc
# has no pvalloc of its own (glibc's would serve it, unprobed).
ALIGNED_SITES := $(addprefix $(BUILD)/workloads/aligned_sites_,nofp jemalloc tcmalloc mimalloc)
WORKLOAD_BINS += $(ALIGNED_SITES)
aligned_link_nofp :=
aligned_link_jemalloc := -DNO_PVALLOC -ljemalloc
aligned_link_tcmalloc := -ltcmalloc_minimal
aligned_link_mimalloc := -lmimalloc
$(ALIGNED_SITES): $(BUILD)/workloads/aligned_sites_%: tests/workloads/aligned_sites.c | $(DEPS_OK)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(NOFP_CFLAGS) $< -o $@ $(aligned_link_$*)
# ---- end of workloads on other allocators ----

# Preloaded into allocscope by an e2e test: a kernel without uprobe_multi links, played by
# failing those bpf() calls, so the perf-event fallback runs on a kernel that has them.
NO_MULTI_LINKS := $(BUILD)/workloads/no_multi_links.so
WORKLOAD_BINS += $(NO_MULTI_LINKS)
$(NO_MULTI_LINKS): tests/e2e/no_multi_links.c | $(DEPS_OK)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -O1 -g -shared -fPIC -Wall -Wextra -Werror $< -o $@ -ldl

-include tests/unit/fixtures.mk

# ---- liballocscope-sampler.so: in-process sampling for LD_PRELOAD (docs/cooperative.md) ----
# Own flags rather than $(CFLAGS): the library runs inside other programs, so it is always
# optimised and PIC, and exports only the allocator entry points and its stats function
# (hidden by default). -fno-builtin keeps the compiler from turning code inside malloc into
# calls to malloc or calloc; frame pointers let a frame-pointer unwinder walk from the probe
# (in the cold path) to the caller (the hot entry points stay frameless tail jumps); -z now
# binds dlsym and log() at load time instead of at the first sampled allocation; -z nodelete
# keeps it mapped if it was dlopen()ed and then dlclosed.
# Its workload is built by the $(BUILD)/workloads/% rule.
SAMPLER_SRCS     := $(sort $(wildcard sampler/*.c))
SAMPLER_HDRS     := $(wildcard sampler/*.h) bpf/sampling.h
SAMPLER_LIB      := $(BUILD)/liballocscope-sampler.so
SAMPLER_WORKLOAD := $(BUILD)/workloads/sampler_workload
SAMPLER_CFLAGS   := -O2 -g -std=gnu11 -fPIC -fvisibility=hidden -fno-builtin -D_GNU_SOURCE -Ibpf \
		    -fno-omit-frame-pointer -Wall -Wextra -Werror
SAMPLER_LDFLAGS  := -shared -Wl,-soname,liballocscope-sampler.so -Wl,-z,now -Wl,-z,nodelete

all: $(SAMPLER_LIB)

$(SAMPLER_LIB): $(SAMPLER_SRCS) $(SAMPLER_HDRS)
	$(call msg,LINK,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(SAMPLER_CFLAGS) $(SAMPLER_LDFLAGS) $(SAMPLER_SRCS) -o $@ -ldl -lm -pthread

# The test uses no agent code: its own rule, so it builds without the agent's objects.
$(BUILD)/tests/test_sampler: tests/unit/test_sampler.c $(wildcard tests/unit/*.h) $(SAMPLER_HDRS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -D_GNU_SOURCE -Itests/unit $(CFLAGS) $< -o $@ -lm

$(SAMPLER_WORKLOAD): sampler/allocscope_sampler.h
unit test: $(SAMPLER_LIB) $(SAMPLER_WORKLOAD)
# ---- end of liballocscope-sampler.so ----

# ---- liballocscope-context: the request-context writer for C and C++ (docs/labels.md) ----
# The OTel thread-context TLS pointer must be reached through TLSDESC from the shared library
# (OTEP 4947: readers find it through its TLSDESC relocation); the archive is the same code
# for programs linked statically (the linker turns the access into a plain TLS offset).
CONTEXT_SRCS   := sampler/context/allocscope_context.c
CONTEXT_HDRS   := sampler/context/allocscope_context.h sampler/context/allocscope_context.hpp
CONTEXT_LIB    := $(BUILD)/liballocscope-context.so
CONTEXT_ARCH   := $(BUILD)/liballocscope-context.a
CONTEXT_CFLAGS := -O2 -g -std=gnu11 -fPIC -fvisibility=hidden -ftls-model=global-dynamic \
		  -mtls-dialect=gnu2 -D_GNU_SOURCE -Wall -Wextra -Werror

all: $(CONTEXT_LIB) $(CONTEXT_ARCH)

$(CONTEXT_LIB): $(CONTEXT_SRCS) $(CONTEXT_HDRS)
	$(call msg,LINK,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CONTEXT_CFLAGS) -shared -Wl,-soname,liballocscope-context.so -Wl,-z,now \
		$(CONTEXT_SRCS) -o $@

$(CONTEXT_ARCH): $(CONTEXT_SRCS) $(CONTEXT_HDRS)
	$(call msg,AR,$@)
	$(Q)mkdir -p $(BUILD)/obj/sampler/context
	$(Q)$(CC) $(CONTEXT_CFLAGS) -c $(CONTEXT_SRCS) -o $(BUILD)/obj/sampler/context/allocscope_context.o
	$(Q)rm -f $@ && ar rcs $@ $(BUILD)/obj/sampler/context/allocscope_context.o

# Workloads that publish request context link the library (its rpath: the build directory).
CONTEXT_WORKLOAD_SRC := tests/workloads/context_requests.c
$(BUILD)/workloads/context_requests: $(CONTEXT_WORKLOAD_SRC) $(CONTEXT_LIB) $(CONTEXT_HDRS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(WORKLOAD_CFLAGS) -Isampler/context $< -o $@ -L$(BUILD) -lallocscope-context \
		-Wl,-rpath,$(abspath $(BUILD)) -lpthread
$(BUILD)/workloads/context_requests_static: $(CONTEXT_WORKLOAD_SRC) $(CONTEXT_ARCH) $(CONTEXT_HDRS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(WORKLOAD_CFLAGS) -Isampler/context $< -o $@ $(CONTEXT_ARCH) -lpthread
WORKLOAD_BINS += $(BUILD)/workloads/context_requests_static
$(BUILD)/workloads/context_requests_dlopen: $(CONTEXT_WORKLOAD_SRC) $(CONTEXT_LIB) $(CONTEXT_HDRS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(WORKLOAD_CFLAGS) -Isampler/context \
		-DCONTEXT_DLOPEN='"$(abspath $(CONTEXT_LIB))"' $< -o $@ -ldl -lpthread
WORKLOAD_BINS += $(BUILD)/workloads/context_requests_dlopen

# The writer's unit test links the archive and the agent's process-context reader.
$(BUILD)/tests/test_context_writer: tests/unit/test_context_writer.c $(wildcard tests/unit/*.h) \
		$(CONTEXT_ARCH) $(CONTEXT_HDRS) $(AGENT_OBJS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) -Itests/unit -Isampler/context $(CFLAGS) $< $(CONTEXT_ARCH) \
		$(AGENT_OBJS) $(LDLIBS) -o $@

# Writer cost per set (tests/bench/context_writer.c).
$(BUILD)/bench/context_writer: tests/bench/context_writer.c $(CONTEXT_ARCH) $(CONTEXT_HDRS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -O2 -g -Wall -Werror -Isampler/context $< -o $@ $(CONTEXT_ARCH) -lpthread
# ---- end of liballocscope-context ----
# ---- liballocscope-count.so: exact counting for `allocscope count|gate` (docs/ci-gate.md) ----
# The sampler's interposition built again with its counting hook (sampler/exact_count.h);
# -fexceptions so that an exception thrown by operator new passes the counting wrapper's cleanup.
COUNT_LIB     := $(BUILD)/liballocscope-count.so
COUNT_LDFLAGS := -shared -Wl,-soname,liballocscope-count.so -Wl,-z,now -Wl,-z,nodelete

all: $(COUNT_LIB)

$(COUNT_LIB): $(SAMPLER_SRCS) $(SAMPLER_HDRS)
	$(call msg,LINK,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(SAMPLER_CFLAGS) -DALLOCSCOPE_EXACT_COUNT -fexceptions $(COUNT_LDFLAGS) \
		$(SAMPLER_SRCS) -o $@ -ldl -lm -pthread -lgcc_s

unit test e2e: $(COUNT_LIB)
# The gate's test library with one more allocation per call (tests/workloads/gate_workload.c).
WORKLOAD_BINS += $(BUILD)/workloads/gate_workload_extra
$(BUILD)/workloads/gate_workload_extra: tests/workloads/gate_workload.c sampler/allocscope_count.h \
		| $(DEPS_OK)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(WORKLOAD_CFLAGS) -DGATE_EXTRA_ALLOC $< -o $@ -lpthread
$(BUILD)/workloads/gate_workload: sampler/allocscope_count.h
# ---- end of liballocscope-count.so ----

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
	$(Q)$(CC) $(CFLAGS) -I$(BUILD)/bench $< $(LIBBPF_A) -lelf -lz -o $@

# ---- fuzzing: libFuzzer harnesses for the parsers of untrusted input (docs/fuzzing.md) ----
# Each tests/fuzz/fuzz_NAME.c is a harness with its seeds in tests/fuzz/corpus/NAME/ (and
# tests/fuzz/NAME.dict when there is one). The agent's sources are compiled again with clang's
# sanitizers into build/fuzz/ (libFuzzer's runtime: Debian's libclang-rt-dev), into an archive
# each harness takes only what it needs from.
FUZZ_SRCS	:= $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS	:= $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/bin/%)
FUZZ_OBJS	:= $(AGENT_SRCS:%.c=$(BUILD)/fuzz/obj/%.o)
FUZZ_LIB	:= $(BUILD)/fuzz/libagent.a
FUZZ_CFLAGS	:= -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
		   -fno-sanitize-recover=all -std=gnu11 -Wall -Wextra -Werror \
		   -Wno-unused-parameter -fno-strict-aliasing
# make fuzz FUZZ_TARGETS="config spool" runs only those harnesses.
FUZZ_TARGETS	?= $(FUZZ_SRCS:tests/fuzz/fuzz_%.c=%)
FUZZ_SECONDS	?= 60
FUZZ_JOBS	?= 1
# Where `make fuzz` keeps what it learns between runs (never the committed seeds).
FUZZ_CORPUS_DIR	?= $(BUILD)/fuzz/corpus

FUZZ_DEPS_OK	:= $(BUILD)/.fuzz-deps-ok
$(FUZZ_DEPS_OK): scripts/check-deps
	$(Q)CLANG=$(CLANG) scripts/check-deps --fuzz
	@mkdir -p $(@D) && touch $@

$(BUILD)/fuzz/obj/%.o: %.c | $(SKELETON) $(BUILD_INFO) $(FUZZ_DEPS_OK)
	$(call msg,CC-FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_LIB): $(FUZZ_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/fuzz/bin/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_LIB)
	$(call msg,FUZZER,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(CPPFLAGS) -Itests/fuzz $(FUZZ_CFLAGS) -fsanitize=fuzzer \
		-MMD -MP -MF $(BUILD)/fuzz/$*.d $< $(FUZZ_LIB) $(LDLIBS) -o $@

# FUZZ_JOBS=2 runs two harnesses at once. A finding fails the run; the input that caused it
# is kept in build/fuzz/findings/.
fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/bin/fuzz_%)
	$(Q)tests/fuzz/run --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) \
		--corpus-dir $(FUZZ_CORPUS_DIR) $^

# What `make test` runs: a few seconds each over the committed seeds.
fuzz-smoke: $(FUZZ_BINS)
	$(Q)tests/fuzz/run --smoke $(FUZZ_BINS)
# ---- end of fuzzing ----

# The cold cost of one file's unwind table (tests/bench/unwind.py).
$(BUILD)/bench/unwind_table_build: tests/bench/unwind_table_build.c $(AGENT_OBJS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $< $(AGENT_OBJS) $(LDLIBS) -o $@

unit: $(UNIT_BINS) $(UNIT_FIXTURES)
	$(Q)tests/run-unit $(UNIT_BINS)

workloads: $(WORKLOAD_BINS)

e2e: $(BUILD)/allocscope $(WORKLOAD_BINS)
	$(Q)python3 tests/e2e/run.py

test: all $(UNIT_BINS) $(UNIT_FIXTURES) $(WORKLOAD_BINS) $(FUZZ_BINS)
	$(Q)tests/run-all

bench: $(BUILD)/allocscope $(WORKLOAD_BINS) $(BUILD)/bench/empty_probe $(SAMPLER_LIB) \
       $(SAMPLER_WORKLOAD) $(BUILD)/bench/unwind_table_build $(COUNT_LIB) \
       $(BUILD)/workloads/gate_workload $(BUILD)/bench/context_writer
	$(Q)python3 tests/bench/overhead.py
	$(Q)python3 tests/bench/agent.py
	$(Q)python3 tests/bench/cooperative.py
	$(Q)python3 tests/bench/budget.py
	$(Q)python3 tests/bench/push.py
	$(Q)python3 tests/bench/unwind.py
	$(Q)python3 tests/bench/count.py
	$(Q)python3 tests/bench/unwind_memory.py
	$(Q)python3 tests/bench/report.py
	$(Q)python3 tests/bench/context.py
	$(Q)python3 tests/bench/records.py

demo: $(BUILD)/allocscope $(WORKLOAD_BINS)
	$(Q)DEMO_PROFILE=$(BUILD)/demo-alloc.pb.gz scripts/demo

# The unit names /usr/local/bin/allocscope; another PREFIX gets the path rewritten. An
# existing /etc/allocscope/allocscope.yaml is kept: the reference goes next to it as .default.
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
CONFIG_DIR       ?= /etc/allocscope
install: $(BUILD)/allocscope $(SAMPLER_LIB) $(COUNT_LIB) $(CONTEXT_LIB) $(CONTEXT_ARCH)
	install -D -m 0755 $(BUILD)/allocscope $(DESTDIR)$(PREFIX)/bin/allocscope
	install -D -m 0755 $(SAMPLER_LIB) $(DESTDIR)$(PREFIX)/lib/liballocscope-sampler.so
	install -D -m 0755 $(COUNT_LIB) $(DESTDIR)$(PREFIX)/lib/liballocscope-count.so
	install -D -m 0644 sampler/allocscope_count.h $(DESTDIR)$(PREFIX)/include/allocscope_count.h
	install -D -m 0755 $(CONTEXT_LIB) $(DESTDIR)$(PREFIX)/lib/liballocscope-context.so
	install -D -m 0644 $(CONTEXT_ARCH) $(DESTDIR)$(PREFIX)/lib/liballocscope-context.a
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/include $(CONTEXT_HDRS)
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

-include $(shell find $(BUILD)/obj $(BUILD)/fuzz -name '*.d' 2>/dev/null)
