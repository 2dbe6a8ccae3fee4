# The README's two commands:  `make repro` (set up + run the pipeline)  and  `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin

# Stage commands run from PATH: the venv must come first or `dvc` runs them with system python.
export PATH := $(BIN):$(PATH)
# With 2 cores, OpenMP spin-waiting slowed training a lot; telemetry has no network here.
export OMP_WAIT_POLICY ?= PASSIVE
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup fashion-mnist repro sweep paper-table verdict smoke perf plots plots-assets test test-fast lint check-reports mlflow-ui clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# Fashion-MNIST, the garments of the built-in scenes: Debian's package where apt runs as root;
# elsewhere pipeline/acquire/fashion_mnist.py downloads the official files (checksum-verified).
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
fashion-mnist:
	@if [ -f $(FASHION_MNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist; }; \
	else \
		echo "dataset-fashion-mnist is not installed (needs apt as root): Fashion-MNIST will be downloaded"; \
	fi

setup: $(VENV)/.installed fashion-mnist

repro: setup
	$(BIN)/dvc repro

# A queued sweep (README, Sweeps): one experiment per label count, JOBS at a time. IMAS_JOBS
# tells each stage how many jobs share the cores (pipeline/control/threads.py); counting live queue
# workers instead can miss one that has not registered yet. Waits until all have run.
LABELED ?= 92,183
JOBS ?= 2
sweep: setup
	$(BIN)/dvc exp run --queue -S labeled=$(LABELED)
	IMAS_JOBS=$(JOBS) $(BIN)/dvc exp run --run-all -j $(JOBS)

# The paper's protocol in miniature (benchmarks/protocol): the grid of label counts × seeds ×
# methods, two stages at a time (`imas grid`, which records each in dvc.lock), then the verdict:
# reports/verdict.json, reports/paper_table.md, reports/figures/protocol/. Several hours on 2
# cores; an interrupted grid resumes where it stopped. `make verdict` only re-judges the
# committed results (seconds).
GRID_JOBS ?= 2
paper-table: setup
	$(BIN)/imas grid benchmarks/protocol/dvc.yaml --jobs $(GRID_JOBS)
	cd benchmarks/protocol && $(BIN)/dvc repro verdict

verdict: setup
	cd benchmarks/protocol && $(BIN)/imas verdict --results results --params params.yaml \
		--partial --out ../../reports/verdict.json --markdown ../../reports/paper_table.md \
		--figures ../../reports/figures/protocol

# One iMAS step and one evaluation at the full shape of every paper preset (R101 at 513, R50 at
# 769 with sliding evaluation on a 1024×2048 image), timed: benchmarks/perf/smoke/*.json, benchmarks/perf/smoke.md.
SMOKE_PRESETS := voc_classic_r101 voc_blended_r101 voc_blended_r50 cityscapes_r50_os16 cityscapes_r50_os8
smoke: setup
	for p in $(SMOKE_PRESETS); do \
		case $$p in cityscapes*) size="1024 2048";; *) size="375 500";; esac; \
		$(BIN)/imas smoke $$p --eval-size $$size --out benchmarks/perf/smoke/$$p.json \
			--table benchmarks/perf/smoke.md || exit 1; \
	done

# benchmarks/perf/benchmarks.md: hardness, strong augmentation, step cost by method, a profile of the
# default step (these need `make repro` first: they start from its warmup weights), and the
# default `dvc repro` timed in a fresh clone. Run on an otherwise idle machine.
perf: setup
	$(BIN)/imas perf hardness
	$(BIN)/imas perf augment
	$(BIN)/imas perf steps
	$(BIN)/imas perf profile
	$(BIN)/imas perf repro
	$(BIN)/imas perf report

# The plots page with local copies of its vega scripts, so that it renders with no network
# (DVC's own page loads them from a CDN). The scripts are downloaded once, checksum-verified.
plots-assets: setup
	$(BIN)/python -m pipeline.reporting.plot_assets --out reports/plots/vendor

plots: plots-assets
	$(BIN)/dvc plots show --html-template pipeline/reporting/plots_page.html --out reports/plots

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The vega scripts too, so the offline plots page's browser test runs instead of skipping.
# One test file per worker, a worker per core (TEST_WORKERS=0 runs them in this process): a
# file's tests share module fixtures such as the end-to-end `dvc repro`, built once.
TEST_WORKERS ?= auto
# Every tier (tests/unit, tests/stage, tests/system); CI runs this. `make test-fast` leaves out
# the system tier (marked slow: whole pipelines, subprocesses, servers).
test: lint plots-assets
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: lint plots-assets
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# CI: the committed default-pipeline report, and the SSL benchmark's and paper table's seed-0
# warmup and tables, regenerate exactly.
check-reports: setup
	.ci/check_reports

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
