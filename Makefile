# normkit — top-level entry points (see README).
#   make run    Release build, then the main job: `normkit bench` on its default cases
#   make test   install test dependencies, then build and run every test suite
JOBS ?= 2
BUILD ?= build

.PHONY: all build run test deps test-cuda build-release test-release test-tsan build-sanitize test-sanitize test-fuzz fuzz test-valgrind clean

all: build

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/normkit bench

deps:
	bash scripts/deps.sh

# Every test flavour builds normkit_mpi (NK_MPI=ON: configure fails if MPI is missing) and runs
# its tests (label mpi: mpirun on 1, 2 and 3 ranks). The release and sanitizer builds also
# build normkit_lapack (NK_LAPACK=ON: configure fails without LAPACKE) and its tests (label
# lapack).
# 1. Release (gcc): all C tests, the MPI tests, the LAPACK tests, the install test.
build-release: deps
	cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Release -DNK_MPI=ON -DNK_LAPACK=ON -DNK_CUDA=ON -DCMAKE_CUDA_COMPILER=$(NVCC)
	cmake --build build-test -j $(JOBS)
test-release: build-release
	cd build-test && ctest --output-on-failure -j $(JOBS)

# 2. clang with ThreadSanitizer (-Werror): everything must build with clang too, and every test
# that runs threads (the pool, each operator's threaded paths, the consistency tests across
# thread counts) must be free of data races. The kernel and reference tests run no threads and
# are left to the other builds; MPI is off here (Open MPI is not instrumented: its tests run in
# builds 1 and 3).
TSAN_SKIP = install_package|test_kernels_|test_reference_
test-tsan: deps
	CC=clang cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DNK_SANITIZE=thread -DNK_MPI=OFF
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j $(JOBS) -E "$(TSAN_SKIP)"

# The sanitizer builds compile at -O1 (what the sanitizers' documentation recommends) with line
# tables only (stack traces keep file:line; full -g spent a quarter of the compile in debug-value
# analysis), and CMakeLists.txt gives the SIMD kernel files out-of-line ASan checks: with inline
# checks rownorm/avx512.c alone took clang 200-380 s of CPU and the whole ASan+UBSan build about
# 35 minutes; now the build takes about 3 minutes (measured 2026-11-27, docs/security.md).
# 3. AddressSanitizer + UndefinedBehaviorSanitizer (clang), with each ISA path forced in turn.
# The same build holds the libFuzzer harnesses (NK_FUZZ=ON: the library carries libFuzzer's
# coverage instrumentation, which the ctest runs ignore), so test-fuzz compiles nothing new.
# The kernel and reference tests do not read NK_ISA (they run every path the CPU has): they run
# in the first pass only.
SAN_BUILD = build-asan
NK_ISA_INDEPENDENT = test_kernels_|test_reference_
build-sanitize: deps
	CC=clang cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DNK_SANITIZE=address,undefined -DNK_FUZZ=ON -DNK_MPI=ON -DNK_LAPACK=ON -DNK_BUILD_TOOLS=OFF
	cmake --build $(SAN_BUILD) -j $(JOBS)
test-sanitize: build-sanitize
	@echo "== ASan+UBSan, NK_ISA=scalar"
	cd $(SAN_BUILD) && NK_ISA=scalar ctest --output-on-failure -j $(JOBS) -E install_package
	for isa in avx2 avx512; do \
	  echo "== ASan+UBSan, NK_ISA=$$isa"; \
	  (cd $(SAN_BUILD) && NK_ISA=$$isa ctest --output-on-failure -j $(JOBS) \
	    -E "install_package|$(NK_ISA_INDEPENDENT)") || exit 1; \
	done

# 4. libFuzzer harnesses (tests/fuzz/, built by build-sanitize): each runs FUZZ_RUNS executions
# from its committed seed corpus (tests/fuzz/corpus/<name>/, read only: new inputs go to a
# scratch directory) and prints its executions and the share of valid calls (it fails below
# 50%). `make fuzz` runs each for FUZZ_LONG_RUNS executions (not part of make test).
FUZZ_RUNS ?= 20000
FUZZ_LONG_RUNS ?= 1000000
FUZZ_HARNESSES = rownorm softmax cross_entropy chnorm moments rowvar resnorm optim quant rlcal calib preln
define nk_fuzz_run
	for h in $(FUZZ_HARNESSES); do \
	  rm -rf $(SAN_BUILD)/scratch/$$h && mkdir -p $(SAN_BUILD)/scratch/$$h && \
	  (cd $(SAN_BUILD) && ./tests/fuzz_$$h -runs=$(1) -seed=1 -print_final_stats=0 \
	    -artifact_prefix=scratch/$$h- scratch/$$h ../tests/fuzz/corpus/$$h 2>fuzz-$$h.log \
	    || { tail -40 fuzz-$$h.log; exit 1; }) || exit 1; \
	done
endef
test-fuzz: build-sanitize
	$(call nk_fuzz_run,$(FUZZ_RUNS))
fuzz: build-sanitize
	$(call nk_fuzz_run,$(FUZZ_LONG_RUNS))

# 5. valgrind memcheck of the C tests of build 1 with NK_ISA=scalar and avx2 (valgrind cannot
# run AVX-512 code), not part of make test (it takes long: docs/security.md gives the time).
# Each test executable runs under memcheck; an invalid access, a use of an uninitialised value
# or a definite/indirect leak fails it (--error-exitcode). The MPI tests (mpirun) and the
# install test (a shell script) are not C test executables and are left out. Only memcheck
# decides (exit 99): the tests' own assertions compare ISA paths bit for bit, and valgrind's
# emulation of AVX2/FMA is not bit-exact (2026-11-27: kernel tests gave -0 for +0 in cols-1
# rows, chnorm_regress's avx2 bits differed from scalar; native, ASan and TSan runs pass), so
# a test that fails its assertions (exit 1) under valgrind is reported, not failed.
VALGRIND = valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect
VALGRIND_ISAS ?= scalar avx2
test-valgrind: build-release
	cd build-test && for isa in $(VALGRIND_ISAS); do \
	  for t in tests/test_*; do \
	    case $$t in *test_mpi_*) continue;; esac; \
	    start=$$(date +%s); \
	    NK_ISA=$$isa $(VALGRIND) ./$$t >valgrind-$${t#tests/}-$$isa.log 2>&1; rc=$$?; \
	    [ $$rc -ne 99 ] || { tail -40 valgrind-$${t#tests/}-$$isa.log; echo "valgrind: $$t NK_ISA=$$isa FAILED (memcheck)"; exit 1; }; \
	    note=; [ $$rc -eq 0 ] || note=", its assertions differ under emulation: rc $$rc"; \
	    echo "valgrind: $$t NK_ISA=$$isa memcheck clean ($$(( $$(date +%s) - start )) s$$note)"; \
	  done; \
	done

# 5. The CUDA backend (NK_CUDA=ON, nvcc) is part of build 1 (build-test): it must build here, and
# its tests (label cuda) run with the others, reporting themselves skipped (exit 77) where no GPU
# is present, as on this machine. test-cuda builds and runs only those (build-cuda), e.g. on a
# GPU machine.
NVCC ?= $(shell command -v nvcc || echo /usr/local/cuda/bin/nvcc)
CUDA_BUILD = build-cuda
test-cuda: deps
	cmake -S . -B $(CUDA_BUILD) -DCMAKE_BUILD_TYPE=Release -DNK_CUDA=ON -DNK_MPI=OFF -DCMAKE_CUDA_COMPILER=$(NVCC)
	cmake --build $(CUDA_BUILD) -j $(JOBS) --target normkit nk_cuda_tests
	cd $(CUDA_BUILD) && ctest --output-on-failure -L cuda

test: test-release test-tsan test-sanitize test-fuzz
	@echo "make test: all suites passed"

clean:
	rm -rf build build-test build-tsan build-asan build-cuda
