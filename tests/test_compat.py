"""Old import paths and models saved before the architecture move keep working."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.make_pre_move_models import outputs
from stable_baselines3 import PPO

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "pre_move_actions.json").read_text())


def assert_same(got: dict, want: dict) -> None:
    assert got["actions"] == want["actions"]
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["values"], want["values"], rtol=0, atol=1e-6)


def test_sparse_ppo_saved_before_the_move_loads_and_predicts_identically():
    model = PPO.load(FIXTURES / "ppo_srigl_pre_move.zip", device="cpu")
    assert type(model.policy).__name__ == "SparseActorCriticPolicy"
    assert_same(outputs(model), EXPECTED["ppo_srigl"])


def test_task_mask_ppo_saved_before_the_move_loads_and_predicts_identically():
    model = PPO.load(FIXTURES / "ppo_task_masks_pre_move.zip", device="cpu")
    from sparse_agents.sb3.task_policy import TaskMaskActorCriticPolicy

    assert isinstance(model.policy, TaskMaskActorCriticPolicy)
    assert model.policy.task_ids == [0, 1]
    for t in (0, 1):
        with model.policy.use_task(t):
            assert_same(outputs(model), EXPECTED[f"ppo_task_masks/{t}"])


@pytest.mark.parametrize("old, new, names", [
    ("continual.task_masks", "sparse_agents.task_masks", ["TaskMasks", "FREE", "OWNER_BUFFER"]),
    ("continual.plugins", "sparse_agents.avalanche.plugins", ["DSTPlugin", "TaskMaskPlugin"]),
    ("sparse_agents.sb3.continual", "sparse_agents.experiments.rl_stream",
     ["train_stream", "DENSE_INPUT", "StreamResult"]),
    ("sparse_agents.sb3.continual", "sparse_agents.sb3.task_policy",
     ["TaskMaskActorCriticPolicy"]),
    ("sparse_agents.sb3.experiment", "sparse_agents.experiments.rl",
     ["make_agent", "train_and_evaluate"]),
    ("sparse_agents.sb3.experiment", "sparse_agents.experiments.hyperparams", ["HYPERPARAMS"]),
])
def test_old_import_paths_re_export_the_same_objects(old, new, names):
    import importlib

    old_mod, new_mod = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(old_mod, name) is getattr(new_mod, name)


def test_continual_package_exports_plugins_and_task_masks():
    import continual
    import sparse_agents as sa
    from sparse_agents.avalanche import DSTPlugin

    assert continual.TaskMasks is sa.TaskMasks
    assert continual.DSTPlugin is DSTPlugin
