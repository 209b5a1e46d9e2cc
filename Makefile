# normkit — top-level entry points (see README).
#   make run    Release build, then the main job: `normkit bench` on its default cases
#   make test   install test dependencies, then build and run every test suite
JOBS ?= 2
BUILD ?= build

.PHONY: all build run test deps test-release test-clang test-sanitize test-fuzz fuzz clean

all: build

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/normkit bench

deps:
	bash scripts/deps.sh

# Every test flavour builds normkit_mpi (NK_MPI=ON: configure fails if MPI is missing) and runs
# its tests (label mpi: mpirun on 1, 2 and 3 ranks).
# 1. Release (gcc): all C tests, the MPI tests, the install test.
test-release: deps
	cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Release -DNK_MPI=ON
	cmake --build build-test -j $(JOBS)
	cd build-test && ctest --output-on-failure -j $(JOBS)

# 2. clang, -Werror: everything must also build and pass with clang.
test-clang: deps
	CC=clang cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release -DNK_MPI=ON
	cmake --build build-clang -j $(JOBS)
	cd build-clang && ctest --output-on-failure -j $(JOBS) -E install_package

# 3. AddressSanitizer + UndefinedBehaviorSanitizer, with each ISA path forced in turn.
test-sanitize: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNK_SANITIZE=address,undefined -DNK_MPI=ON
	cmake --build build-asan -j $(JOBS)
	for isa in scalar avx2 avx512; do \
	  echo "== ASan+UBSan, NK_ISA=$$isa"; \
	  (cd build-asan && NK_ISA=$$isa ctest --output-on-failure -j $(JOBS) -E install_package) || exit 1; \
	done

# 4. libFuzzer harnesses (tests/fuzz/, clang, ASan+UBSan): each runs FUZZ_RUNS executions from
# its committed seed corpus (tests/fuzz/corpus/<name>/, read only: new inputs go to a scratch
# directory) and prints its executions and the share of valid calls (it fails below 50%).
# About 6 s per harness on this 2-core machine (docs/security.md). `make fuzz` runs each for
# FUZZ_LONG_RUNS executions (not part of make test).
FUZZ_RUNS ?= 20000
FUZZ_LONG_RUNS ?= 1000000
FUZZ_HARNESSES = rownorm softmax cross_entropy
build-fuzz: deps
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNK_SANITIZE=address,undefined -DNK_FUZZ=ON -DNK_BUILD_TOOLS=OFF
	cmake --build build-fuzz -j $(JOBS) $(foreach h,$(FUZZ_HARNESSES),--target fuzz_$(h))
define nk_fuzz_run
	for h in $(FUZZ_HARNESSES); do \
	  rm -rf build-fuzz/scratch/$$h && mkdir -p build-fuzz/scratch/$$h && \
	  (cd build-fuzz && ./tests/fuzz_$$h -runs=$(1) -seed=1 -print_final_stats=0 \
	    -artifact_prefix=scratch/$$h- scratch/$$h ../tests/fuzz/corpus/$$h 2>fuzz-$$h.log \
	    || { tail -40 fuzz-$$h.log; exit 1; }) || exit 1; \
	done
endef
test-fuzz: build-fuzz
	$(call nk_fuzz_run,$(FUZZ_RUNS))
fuzz: build-fuzz
	$(call nk_fuzz_run,$(FUZZ_LONG_RUNS))

test: test-release test-clang test-sanitize test-fuzz
	@echo "make test: all suites passed"

clean:
	rm -rf build build-test build-clang build-asan build-fuzz
