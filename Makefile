# cervirad — everything the two README commands need is installed from here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
RUN_DIR ?= runs/demo

.PHONY: venv demo test test-fast bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU build of torch first (a bare `torch` requirement pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: venv
	$(BIN)/cervirad run-all --config $(CONFIG) --run-dir $(RUN_DIR)

# every test but those marked gpu, the slow ones included (-m replaces pyproject's -m "not slow"); CI runs this.
# Two pytest-xdist workers (one per core of the reference 2-core machine); a module's tests stay on one worker
# (module fixtures are built once) and modules go out in collection order, which tests/conftest.py ends with the
# modules that wait for the background end-to-end run, longest first. Prints its wall time and the machine's load.
# One BLAS/OpenMP thread per process: two workers, each spawning CLI runs, would otherwise run 2-thread torch
# and BLAS in 4-6 processes on 2 cores (oversubscribed OpenMP spins: test_ensemble took 503 s instead of ~130 s).
TEST_WORKERS ?= 2
test: venv
	@t0=$$(date +%s); rc=0; \
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=$${MKL_NUM_THREADS:-1} \
	$(BIN)/python -m pytest -m "not gpu" -q --durations=25 -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder \
	  || rc=$$?; \
	echo "make test: wall time $$(( $$(date +%s) - t0 )) s ($(TEST_WORKERS) workers, $$(nproc) cores;" \
	  "load average at the end $$(cut -d' ' -f1-3 /proc/loadavg))"; exit $$rc

# plain pytest: skips the tests marked slow (pyproject addopts)
test-fast: venv
	$(BIN)/python -m pytest -q

# scripts/bench/*.py, each against a baseline measured in the same run (run_all.py runs the demo pipeline twice)
bench: venv
	for f in scripts/bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
