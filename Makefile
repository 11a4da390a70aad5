# Top-level convenience wrapper around CMake. Everything real lives in CMakeLists.txt; these
# targets are the commands the README promises on a fresh Debian 12 machine:
#   make demo   install what is missing, build, start the Redis walk-through
#   make test   install what is missing, build, run every test (what .ci/run runs)

BUILD_DIR  ?= build
ASAN_DIR   ?= build-asan
MATRIX_DIR  = build-matrix
FUZZ_DIR   ?= $(MATRIX_DIR)/clang-RelWithDebInfo
FUZZ_SECONDS ?= 30
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX     ?= /usr/local
DESTDIR    ?=
BENCH_ARGS ?=
CALLGRIND_ARGS ?=
DEMO_ARGS  ?=

# Sources the style checks cover (only files that exist; others add theirs as they land).
C_SOURCES   = $(shell find runtime protocols tests/unit tests/fuzz tools -name '*.[ch]' 2>/dev/null)
LUA_DIRS    = $(wildcard lua policies tests/lua)

.PHONY: all deps configure build install test docs demo asan asan-build matrix fuzz bench callgrind format format-check lint clean

all: build

deps:
	tools/install-deps.sh

# Every target that configures starts with deps: on a fresh machine it installs what is
# missing (as root) or prints the one apt-get command to run, instead of CMake failing on
# the first absent pkg-config module. With everything present it takes a second.
configure: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j$(JOBS)

# Installs what `make build` built under $(DESTDIR)$(PREFIX): bin/meltemi, bin/meltemi-iptables,
# share/meltemi/{lua,policies}, share/doc/meltemi/{examples,docs}, share/man/man1/meltemi.1.
# No rebuild here (an install as root must not write into the build tree).
install:
	DESTDIR=$(DESTDIR) cmake --install $(BUILD_DIR) --prefix $(PREFIX)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

# docs/redis-commands.md is generated from the command table (a test fails when it is stale).
docs: build
	$(BUILD_DIR)/redis_commands_doc > docs/redis-commands.md
	$(BUILD_DIR)/redis_commands_doc --lua > lua/meltemi/redis/command_names.lua

demo: build
	MELTEMI_BIN=$(CURDIR)/$(BUILD_DIR)/meltemi examples/redis-demo/run.sh $(DEMO_ARGS)

# Every test (unit, Lua, integration) under AddressSanitizer + UndefinedBehaviorSanitizer with
# leak detection; CMakeLists.txt sets the sanitizer options and collects the reports of the
# meltemi processes the integration tests start (build-asan/sanitizer-logs/).
asan: asan-build
	ctest --test-dir $(ASAN_DIR) --output-on-failure

asan-build: deps
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DMELTEMI_SANITIZE=ON
	cmake --build $(ASAN_DIR) -j$(JOBS)

# gcc and clang, each in Debug, RelWithDebInfo and Release (-Werror everywhere), each build's
# unit tests; builds in build-matrix/<cc>-<type>/ (tools/build-matrix.sh).
matrix: deps
	tools/build-matrix.sh -j $(JOBS)

# The libFuzzer targets (a clang build) fuzzed for FUZZ_SECONDS each (tests/fuzz/run.sh).
fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(FUZZ_DIR) -j$(JOBS) --target fuzzers
	tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

bench: build
	MELTEMI_BIN=$(CURDIR)/$(BUILD_DIR)/meltemi tests/bench/run.sh $(BENCH_ARGS)

# Instructions per request in meltemi under callgrind (Redis GET P=1/P=16, Dubbo depth 1);
# baseline in tests/bench/RESULTS.md.
callgrind: build
	MELTEMI_BIN=$(CURDIR)/$(BUILD_DIR)/meltemi tests/bench/callgrind.sh $(CALLGRIND_ARGS)

format:
	@if [ -n "$(strip $(C_SOURCES))" ]; then clang-format -i $(C_SOURCES); fi

format-check:
	@if [ -n "$(strip $(C_SOURCES))" ]; then clang-format --dry-run -Werror $(C_SOURCES); fi

# Both checks run and report before the target fails.
lint:
	@rc=0; \
	$(MAKE) -s format-check || rc=1; \
	if [ -n "$(strip $(LUA_DIRS))" ]; then luacheck -q --no-color $(LUA_DIRS) || rc=1; fi; \
	exit $$rc

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(MATRIX_DIR)
