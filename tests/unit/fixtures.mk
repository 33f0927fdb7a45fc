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
