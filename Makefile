# capid: plain GNU Make with pkg-config. See README.md.
# Targets: all (default), run, test, unit, integ, bench, fuzz, lint, format, clean.
# Knobs: WERROR=1 (CI), SAN=address,undefined (sanitizer build in build/san).

PKGS     := libcjson libcurl libmicrohttpd libutf8proc yaml-0.1 sqlite3 libcrypto
CC       ?= cc
ifeq ($(SAN),)
BUILD    ?= build
else
BUILD    ?= build/san
endif
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.1.0)

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla
HARDEN   := -D_FORTIFY_SOURCE=3 -fstack-protector-strong -fPIE
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
DATADIR  ?= $(abspath data)
CFLAGS   += -std=c17 $(WARN) -D_GNU_SOURCE -DCAPID_VERSION='"$(VERSION)"' -DCAPID_DATADIR='"$(DATADIR)"' -Isrc
CFLAGS   += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
LDFLAGS  += -pie
ifneq ($(WERROR),)
CFLAGS   += -Werror
endif
ifneq ($(SAN),)
CFLAGS   += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SAN)
else
CFLAGS   += $(HARDEN)
endif

# MODULES/UNITS narrow the build (e.g. MODULES="util capi" UNITS="tests/unit/runner.c tests/unit/test_norm.c").
MODULES  ?= $(notdir $(wildcard src/*))
LIB_SRC  := $(filter-out src/main.c,$(sort $(foreach m,$(MODULES),$(wildcard src/$(m)/*.c))))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SIM_SRC  := $(sort $(wildcard tools/graph-sim/*.c))
SIM_OBJ  := $(SIM_SRC:%.c=$(BUILD)/obj/%.o)
TOOL_SRC := $(sort $(wildcard tools/*.c))
TOOLS    := $(TOOL_SRC:tools/%.c=$(BUILD)/%)
UNITS    ?= $(wildcard tests/unit/*.c)
UNIT_SRC := $(sort $(UNITS))
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/obj/%.o)
ALL_OBJ  := $(LIB_OBJ) $(SIM_OBJ) $(UNIT_OBJ) $(BUILD)/obj/src/main.o

BINS     := $(BUILD)/capid $(BUILD)/capid-graph-sim $(BUILD)/unit-tests $(TOOLS)

.SECONDARY:
.PHONY: all deps run test unit unit-san integ bench fuzz fuzz-replay lint format clean
all: $(BINS)

deps:
	@scripts/install-deps

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libcapid.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/capid: $(BUILD)/obj/src/main.o $(BUILD)/libcapid.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/capid-graph-sim: $(SIM_OBJ) $(BUILD)/libcapid.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(UNIT_OBJ) $(BUILD)/libcapid.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%: $(BUILD)/obj/tools/%.o $(BUILD)/libcapid.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

-include $(ALL_OBJ:.o=.d)

# `make run`: install, build, start the Graph API simulator and the gateway.
run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-demo

# `make test`: install, build (warnings are errors), run every suite, then the
# unit tests and the fuzz corpus again under ASan+UBSan.
test: deps
	@$(MAKE) --no-print-directory WERROR=1 all
	@$(MAKE) --no-print-directory WERROR=1 SAN=address,undefined OPT=-O1 all
	@scripts/test-all

unit: all
	$(BUILD)/unit-tests

integ: all
	python3 tests/integ/run.py

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench

# libFuzzer harness (clang): `make fuzz` runs for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS  := -std=c17 -g -O1 -D_GNU_SOURCE -Isrc -fsanitize=fuzzer,address,undefined \
                -DCAPID_VERSION='"$(VERSION)"' -DCAPID_DATADIR='"$(DATADIR)"' \
                $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
build/fuzz/fuzz-map: tests/fuzz/fuzz_map.c $(LIB_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(LDLIBS)
fuzz: deps build/fuzz/fuzz-map
	@mkdir -p build/fuzz/corpus
	build/fuzz/fuzz-map -max_total_time=$(FUZZ_SECONDS) -max_len=65536 build/fuzz/corpus tests/fuzz/corpus
fuzz-replay: build/fuzz/fuzz-map
	build/fuzz/fuzz-map -runs=0 tests/fuzz/corpus

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr -Isrc src tools
	clang-format --dry-run --Werror $$(find src tools tests bench -name '*.[ch]')

format:
	clang-format -i $$(find src tools tests bench -name '*.[ch]')

clean:
	rm -rf build
