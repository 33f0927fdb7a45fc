# ELF fixtures for the symbolize unit tests (test_elf_file, test_symbolizer), built from
# tests/unit/fixtures/*.c into $(BUILD)/fixtures/. Tests find them through
# $ALLOCSCOPE_FIXTURES, else build/fixtures (they run from the repository root).
#
#   libfixture.so            shared library the targets link against (rpath $ORIGIN)
#   target_pie               PIE executable with .symtab
#   target_nopie             ET_EXEC executable (-no-pie)
#   target_debuglink         stripped, names in target_debuglink.debug via .gnu_debuglink
#   target_buildid           stripped, names in debug/.build-id/xx/yyyy.debug
# Each target has its own FIXTURE_VARIANT, hence its own build id.

UNIT_FIXTURE_DIR := $(BUILD)/fixtures
UNIT_FIXTURE_SRC := tests/unit/fixtures
UNIT_FIXTURE_CFLAGS := -O1 -g -fno-inline -fno-omit-frame-pointer -Wall -Werror -Wl,--build-id=sha1
UNIT_FIXTURE_LINK := -L$(UNIT_FIXTURE_DIR) -lfixture -Wl,-rpath,'$$ORIGIN'
OBJCOPY ?= objcopy
READELF ?= readelf

UNIT_FIXTURES := $(UNIT_FIXTURE_DIR)/libfixture.so \
		 $(UNIT_FIXTURE_DIR)/target_pie \
		 $(UNIT_FIXTURE_DIR)/target_nopie \
		 $(UNIT_FIXTURE_DIR)/target_debuglink \
		 $(UNIT_FIXTURE_DIR)/target_debuglink.debug \
		 $(UNIT_FIXTURE_DIR)/target_buildid \
		 $(UNIT_FIXTURE_DIR)/debug/.build-id/.stamp

$(UNIT_FIXTURE_DIR)/libfixture.so: $(UNIT_FIXTURE_SRC)/libfixture.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(UNIT_FIXTURE_CFLAGS) -fPIC -shared -Wl,-soname,libfixture.so $< -o $@

$(UNIT_FIXTURE_DIR)/target_pie: $(UNIT_FIXTURE_SRC)/target.c $(UNIT_FIXTURE_DIR)/libfixture.so
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(UNIT_FIXTURE_CFLAGS) -fPIE -pie -DFIXTURE_VARIANT=1 $< $(UNIT_FIXTURE_LINK) -o $@

$(UNIT_FIXTURE_DIR)/target_nopie: $(UNIT_FIXTURE_SRC)/target.c $(UNIT_FIXTURE_DIR)/libfixture.so
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(UNIT_FIXTURE_CFLAGS) -fno-pie -no-pie -DFIXTURE_VARIANT=2 $< $(UNIT_FIXTURE_LINK) -o $@

# Unstripped originals; the tests never open them.
$(UNIT_FIXTURE_DIR)/target_debuglink.full: $(UNIT_FIXTURE_SRC)/target.c $(UNIT_FIXTURE_DIR)/libfixture.so
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(UNIT_FIXTURE_CFLAGS) -fPIE -pie -DFIXTURE_VARIANT=3 $< $(UNIT_FIXTURE_LINK) -o $@

$(UNIT_FIXTURE_DIR)/target_buildid.full: $(UNIT_FIXTURE_SRC)/target.c $(UNIT_FIXTURE_DIR)/libfixture.so
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(UNIT_FIXTURE_CFLAGS) -fPIE -pie -DFIXTURE_VARIANT=4 $< $(UNIT_FIXTURE_LINK) -o $@

$(UNIT_FIXTURE_DIR)/%.debug: $(UNIT_FIXTURE_DIR)/%.full
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --only-keep-debug $< $@

# --add-gnu-debuglink records the debug file's name and CRC32.
$(UNIT_FIXTURE_DIR)/target_debuglink: $(UNIT_FIXTURE_DIR)/target_debuglink.full \
				      $(UNIT_FIXTURE_DIR)/target_debuglink.debug
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --strip-all --add-gnu-debuglink=$(UNIT_FIXTURE_DIR)/target_debuglink.debug $< $@

# No debuglink here: the build-id tree is the only way to its names.
$(UNIT_FIXTURE_DIR)/target_buildid: $(UNIT_FIXTURE_DIR)/target_buildid.full
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --strip-all $< $@

# debug/.build-id/<first two hex digits>/<the rest>.debug, named after the build id.
$(UNIT_FIXTURE_DIR)/debug/.build-id/.stamp: $(UNIT_FIXTURE_DIR)/target_buildid.full
	$(call msg,FIXTURE,$@)
	$(Q)id=$$($(READELF) -n $< | sed -n 's/^ *Build ID: *//p'); \
	test -n "$$id" || { echo "no build id in $<" >&2; exit 1; }; \
	dir=$(@D)/$$(echo $$id | cut -c1-2); \
	mkdir -p $$dir && \
	$(OBJCOPY) --only-keep-debug $< $$dir/$$(echo $$id | cut -c3-).debug && \
	touch $@

# DWARF fixtures (test_dwarf_lines, test_symbolizer, test_debuginfo), built -O2 -g as
# distributions build, from tests/unit/fixtures/lines.c and lines_cxx.cc:
#
#   lines                    unstripped, DWARF 5 (the compiler's default)
#   lines_dwarf4             unstripped, DWARF 4 (file numbering differs)
#   lines_debuglink          stripped, DWARF in lines_debuglink.debug via .gnu_debuglink
#   lines_buildid            stripped, DWARF in debug/.build-id/xx/yyyy.debug
#   lines_debuginfod         stripped, DWARF only in debuginfod/ (the test serves that dir)
#   lines_dwz_local          stripped, dwz-compressed DWARF in the build-id tree, its common
#                            (alt) file too; the recorded alt path does not exist
#   lines_dwz_remote         the same, DWARF and alt file only in debuginfod/
#   lines_cxx                C++, unstripped
#   lines_cxx_nodwarf        C++, .symtab only (names from the symbol table, demangled)
# Without dwz, the dwz fixtures are replaced by a dwz-missing marker the tests report.

LINES_FIXTURE_CFLAGS := -O2 -g -fPIE -pie -Wall -Werror -Wl,--build-id=sha1
DWZ ?= dwz

UNIT_FIXTURES += $(UNIT_FIXTURE_DIR)/lines \
		 $(UNIT_FIXTURE_DIR)/lines_dwarf4 \
		 $(UNIT_FIXTURE_DIR)/lines_debuglink \
		 $(UNIT_FIXTURE_DIR)/lines_debuglink.debug \
		 $(UNIT_FIXTURE_DIR)/lines_buildid \
		 $(UNIT_FIXTURE_DIR)/debug/.build-id/.stamp-lines \
		 $(UNIT_FIXTURE_DIR)/lines_debuginfod \
		 $(UNIT_FIXTURE_DIR)/debuginfod/lines_debuginfod.debug \
		 $(UNIT_FIXTURE_DIR)/.stamp-dwz \
		 $(UNIT_FIXTURE_DIR)/lines_cxx \
		 $(UNIT_FIXTURE_DIR)/lines_cxx_nodwarf

$(UNIT_FIXTURE_DIR)/lines: $(UNIT_FIXTURE_SRC)/lines.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(LINES_FIXTURE_CFLAGS) -DFIXTURE_VARIANT=11 $< -o $@

$(UNIT_FIXTURE_DIR)/lines_dwarf4: $(UNIT_FIXTURE_SRC)/lines.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(LINES_FIXTURE_CFLAGS) -gdwarf-4 -DFIXTURE_VARIANT=15 $< -o $@

$(UNIT_FIXTURE_DIR)/lines_debuglink.full: $(UNIT_FIXTURE_SRC)/lines.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(LINES_FIXTURE_CFLAGS) -DFIXTURE_VARIANT=12 $< -o $@

$(UNIT_FIXTURE_DIR)/lines_buildid.full: $(UNIT_FIXTURE_SRC)/lines.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(LINES_FIXTURE_CFLAGS) -DFIXTURE_VARIANT=13 $< -o $@

$(UNIT_FIXTURE_DIR)/lines_debuginfod.full: $(UNIT_FIXTURE_SRC)/lines.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(LINES_FIXTURE_CFLAGS) -DFIXTURE_VARIANT=14 $< -o $@

$(UNIT_FIXTURE_DIR)/lines_debuglink: $(UNIT_FIXTURE_DIR)/lines_debuglink.full \
				     $(UNIT_FIXTURE_DIR)/lines_debuglink.debug
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --strip-all --add-gnu-debuglink=$(UNIT_FIXTURE_DIR)/lines_debuglink.debug $< $@

$(UNIT_FIXTURE_DIR)/lines_buildid: $(UNIT_FIXTURE_DIR)/lines_buildid.full
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --strip-all $< $@

$(UNIT_FIXTURE_DIR)/debug/.build-id/.stamp-lines: $(UNIT_FIXTURE_DIR)/lines_buildid.full
	$(call msg,FIXTURE,$@)
	$(Q)id=$$($(READELF) -n $< | sed -n 's/^ *Build ID: *//p'); \
	test -n "$$id" || { echo "no build id in $<" >&2; exit 1; }; \
	dir=$(@D)/$$(echo $$id | cut -c1-2); \
	mkdir -p $$dir && \
	$(OBJCOPY) --only-keep-debug $< $$dir/$$(echo $$id | cut -c3-).debug && \
	touch $@

$(UNIT_FIXTURE_DIR)/lines_debuginfod: $(UNIT_FIXTURE_DIR)/lines_debuginfod.full
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --strip-all $< $@

$(UNIT_FIXTURE_DIR)/debuginfod/lines_debuginfod.debug: $(UNIT_FIXTURE_DIR)/lines_debuginfod.full
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(OBJCOPY) --only-keep-debug $< $@

# Two builds whose shared DWARF dwz moves into one common file, recorded under a path that
# does not exist, as when the debug package holding it is not installed.
$(UNIT_FIXTURE_DIR)/.stamp-dwz: $(UNIT_FIXTURE_SRC)/lines.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)/dwz $(@D)/debuginfod
	$(Q)rm -f $(@D)/dwz-missing
	$(Q)if ! command -v $(DWZ) >/dev/null 2>&1; then \
		echo "dwz is not installed: run sudo scripts/install-deps" > $(@D)/dwz-missing; \
		touch $@; exit 0; \
	fi; \
	set -e; d=$(@D)/dwz; \
	$(CC) $(LINES_FIXTURE_CFLAGS) -DFIXTURE_VARIANT=16 $< -o $$d/lines_dwz_local.full; \
	$(CC) $(LINES_FIXTURE_CFLAGS) -DFIXTURE_VARIANT=17 $< -o $$d/lines_dwz_remote.full; \
	rm -f $$d/common.debug; \
	$(DWZ) -m $$d/common.debug -M /nonexistent/.dwz/allocscope-common.debug \
		$$d/lines_dwz_local.full $$d/lines_dwz_remote.full; \
	$(OBJCOPY) --strip-all $$d/lines_dwz_local.full $(@D)/lines_dwz_local; \
	$(OBJCOPY) --strip-all $$d/lines_dwz_remote.full $(@D)/lines_dwz_remote; \
	for f in $$d/lines_dwz_local.full $$d/common.debug; do \
		id=$$($(READELF) -n $$f | sed -n 's/^ *Build ID: *//p'); \
		test -n "$$id" || { echo "no build id in $$f" >&2; exit 1; }; \
		mkdir -p $(@D)/debug/.build-id/$$(echo $$id | cut -c1-2); \
		$(OBJCOPY) --only-keep-debug $$f \
			$(@D)/debug/.build-id/$$(echo $$id | cut -c1-2)/$$(echo $$id | cut -c3-).debug; \
	done; \
	$(OBJCOPY) --only-keep-debug $$d/lines_dwz_remote.full $(@D)/debuginfod/lines_dwz_remote.debug; \
	cp $$d/common.debug $(@D)/debuginfod/allocscope-common.debug; \
	touch $@

# DWARF without a single code range (test_elf_file).
UNIT_FIXTURES += $(UNIT_FIXTURE_DIR)/data_only.so
$(UNIT_FIXTURE_DIR)/data_only.so: $(UNIT_FIXTURE_SRC)/data_only.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -O1 -g -fPIC -shared -nostdlib -Wall -Werror -Wl,--build-id=sha1 $< -o $@

$(UNIT_FIXTURE_DIR)/lines_cxx: $(UNIT_FIXTURE_SRC)/lines_cxx.cc
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CXX) $(LINES_FIXTURE_CFLAGS) $< -o $@

$(UNIT_FIXTURE_DIR)/lines_cxx_nodwarf: $(UNIT_FIXTURE_DIR)/lines_cxx
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --strip-debug $< $@

# test_unwind (tests/unit/fixtures/unwind_target.c): one call chain built as distributions
# build (-O2, no frame pointers, CFI in .eh_frame), as a frame-pointer build without CFI (no -g
# either: with -g, GCC would write the CFI to .debug_frame), and with its CFI only in
# .debug_frame, only in a separate debug file found through .gnu_debuglink. libunwind_cb.so is
# dlopen()ed by the target after the test snapshotted its maps.
UNWIND_FIXTURE_CFLAGS := -O2 -Wall -Werror -fPIE -pie
UNIT_FIXTURES += $(UNIT_FIXTURE_DIR)/unwind_target_cfi \
		 $(UNIT_FIXTURE_DIR)/unwind_target_fp \
		 $(UNIT_FIXTURE_DIR)/unwind_target_dbgframe \
		 $(UNIT_FIXTURE_DIR)/unwind_target_dbgframe.debug \
		 $(UNIT_FIXTURE_DIR)/libunwind_cb.so

$(UNIT_FIXTURE_DIR)/unwind_target_cfi: $(UNIT_FIXTURE_SRC)/unwind_target.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(UNWIND_FIXTURE_CFLAGS) -g -fomit-frame-pointer -fasynchronous-unwind-tables $< -o $@

$(UNIT_FIXTURE_DIR)/unwind_target_fp: $(UNIT_FIXTURE_SRC)/unwind_target.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(UNWIND_FIXTURE_CFLAGS) -fno-omit-frame-pointer -fno-asynchronous-unwind-tables \
		-fno-unwind-tables $< -o $@

$(UNIT_FIXTURE_DIR)/libunwind_cb.so: $(UNIT_FIXTURE_SRC)/unwind_cb.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -O2 -g -fomit-frame-pointer -Wall -Werror -fPIC -shared $< -o $@

$(UNIT_FIXTURE_DIR)/unwind_target_dbgframe.unstripped: $(UNIT_FIXTURE_SRC)/unwind_target.c
	$(call msg,FIXTURE,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(UNWIND_FIXTURE_CFLAGS) -g -fomit-frame-pointer -fno-asynchronous-unwind-tables \
		-fno-unwind-tables $< -o $@

$(UNIT_FIXTURE_DIR)/unwind_target_dbgframe.debug: $(UNIT_FIXTURE_DIR)/unwind_target_dbgframe.unstripped
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --only-keep-debug $< $@

$(UNIT_FIXTURE_DIR)/unwind_target_dbgframe: $(UNIT_FIXTURE_DIR)/unwind_target_dbgframe.unstripped \
					  $(UNIT_FIXTURE_DIR)/unwind_target_dbgframe.debug
	$(call msg,FIXTURE,$@)
	$(Q)$(OBJCOPY) --strip-debug \
		--add-gnu-debuglink=$(UNIT_FIXTURE_DIR)/unwind_target_dbgframe.debug $< $@

# A Go runtime heap profile (test_report reads pprof written by others): built and run at test
# time with the Go toolchain, standard library only (no module download).
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
UNIT_FIXTURES += $(UNIT_FIXTURE_DIR)/go_heap.pb.gz
$(UNIT_FIXTURE_DIR)/go_heap.pb.gz: $(UNIT_FIXTURE_SRC)/go_heap.go
	$(call msg,GO-RUN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)GOCACHE=$(abspath $(UNIT_FIXTURE_DIR))/gocache GOPATH=$(abspath $(UNIT_FIXTURE_DIR))/gopath \
		GO111MODULE=off GOTOOLCHAIN=local \
		GOFLAGS= $(GO) run $< $@
