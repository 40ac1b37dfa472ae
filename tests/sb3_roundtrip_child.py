"""Child process for the SB3 save/load round trip: load a saved sparse agent in a fresh
process, report masks, topology state and deterministic actions; optionally continue
training with ``learn(reset_num_timesteps=False)`` and save the policy state.

usage: sb3_roundtrip_child.py ALGO MODEL.zip OBS.npy OUT.pt [CONTINUE_STEPS]
"""

import sys

import numpy as np
import torch


def main() -> None:
    torch.set_num_threads(1)
    algo_name, path, obs_path, out = sys.argv[1:5]
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    algo = getattr(sb3, algo_name)
    obs = np.load(obs_path)
    env_id = "CartPole-v1" if algo_name in ("PPO", "A2C", "DQN") else "Pendulum-v1"
    env = make_vec_env(env_id, n_envs=1, seed=0)
    model = algo.load(path, env=env)
    pol = model.policy
    result = {
        "class": type(pol).__name__,
        "masks": {k: {n: m.clone() for n, m in t.masks.items()}
                  for k, t in pol.topologies.items()},
        "steps": {k: t.step for k, t in pol.topologies.items()},
        "updates": {k: t.n_updates for k, t in pol.topologies.items()},
        "t_end": {k: t.schedule.t_end for k, t in pol.topologies.items()},
        "actions": model.predict(obs, deterministic=True)[0],
    }
    if steps:
        model.set_random_seed(1)
        model._last_obs = None
        model.learn(steps, reset_num_timesteps=False)
        result["state"] = {k: v.clone() for k, v in pol.state_dict().items()
                           if torch.is_tensor(v)}
        result["steps_after"] = {k: t.step for k, t in pol.topologies.items()}
        result["t_end_after"] = {k: t.schedule.t_end for k, t in pol.topologies.items()}
    torch.save(result, out)


if __name__ == "__main__":
    main()
