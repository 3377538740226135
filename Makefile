# Thin front over CMake. `make run` and `make test` work on a fresh Debian machine.
BUILD      ?= build
TEST_BUILD ?= build-test
JOBS       ?= $(shell nproc)

.PHONY: all build deps run test bench experiments format format-check clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: a local 5-node ring (HTTP on 5001-5005), until Ctrl-C.
run: build
	./$(BUILD)/ringnet cluster --nodes 5

test: deps format-check
	@bash scripts/deps.sh --test
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DRINGNET_SANITIZE=ON -DBUILD_TESTING=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	cd $(TEST_BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	bash bench/sim_scale.sh

experiments: build
	bash bench/experiments.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# fails, naming the files, when a C file is not as clang-format would write it
format-check:
	@bad=$$(for f in $$(git ls-files '*.c' '*.h'); do clang-format --dry-run -Werror "$$f" >/dev/null 2>&1 || echo "$$f"; done); \
	if [ -n "$$bad" ]; then echo "format-check: run 'make format' for:"; echo "$$bad"; exit 1; fi

clean:
	rm -rf $(BUILD) $(TEST_BUILD)
