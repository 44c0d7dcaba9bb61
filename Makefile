# aioloop: a thin wrapper around meson/ninja.  Everything of substance lives
# in scripts/; see README.md.
#
#   make demo               install missing packages, build, run aioloop-nbd
#                           with real NBD clients (scripts/demo.sh)
#   make check              install missing packages, run every test
#   make build              default build in build/
#   make bench              release build in build-bench/, run bench/run-all.sh
#   make install PREFIX=DIR install headers, libraries and aioloop.pc
#   make deps               install missing packages for build and check
#   make clean              remove every build directory

PREFIX ?= /usr/local
BUILD  ?= build
JOBS   ?= 2
MESON_SETUP_ARGS ?=

.PHONY: all deps deps-build deps-check deps-bench deps-demo build check demo bench \
        install clean

all: build

deps:
	@scripts/deps.sh build check

deps-build:
	@scripts/deps.sh build

deps-check:
	@scripts/deps.sh build check

deps-bench:
	@scripts/deps.sh build bench

deps-demo:
	@scripts/deps.sh build demo

# Configure once (an existing build directory keeps its options), then build.
build: deps-build
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) $(MESON_SETUP_ARGS)
	ninja -C $(BUILD) -j $(JOBS)

check: deps-check
	@JOBS=$(JOBS) scripts/check.sh

# deps-demo first: the demo's clients (qemu-utils, libnbd-bin, fio).
demo: deps-demo build
	scripts/demo.sh $(BUILD)

bench: deps-bench
	@scripts/bench.sh build-bench

install: deps-build
	@scripts/install.sh "$(abspath $(PREFIX))" build-install

clean:
	rm -rf build build-asan build-tsan build-ucontext build-bench build-install build-fuzz
