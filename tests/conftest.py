"""Shared test set-up: small thread counts keep the suite fast on 2 cores."""

import os
import socket
import warnings

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*QP solver.*")

# Property tests: a fixed example sequence by default (CI fails only on real changes);
# HYPOTHESIS_PROFILE=explore searches with fresh random examples and more of them.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def sb3_log_dir(tmp_path_factory):
    """SB3's ``learn()`` without a log folder makes a new ``<tmp>/SB3-<time>`` folder per
    call (about 1,700 per test run); ``SB3_LOGDIR`` keeps them in pytest's temporary
    directory, which pytest prunes."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3_logs")))
    yield
    patch.undo()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection raises (the data must be read offline)."""
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test that must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
