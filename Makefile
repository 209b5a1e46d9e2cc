# normkit — top-level entry points (see README).
#   make run    Release build, then the main job: `normkit bench` on its default cases
#   make test   install test dependencies, then build and run every test suite
JOBS ?= 2
BUILD ?= build

.PHONY: all build run test deps test-release test-clang test-sanitize clean

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

test: test-release test-clang test-sanitize
	@echo "make test: all suites passed"

clean:
	rm -rf build build-test build-clang build-asan
