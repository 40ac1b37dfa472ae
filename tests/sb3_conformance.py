"""stable-baselines3's own test modules, run with the ``Sparse*`` policy aliases.

SB3's tests ship in its source distribution, not in the wheel. ``fetch`` downloads the
sdist of the installed SB3 version from the package registry (an install-time step: the
README's install command runs it); ``generate`` writes the listed modules into a folder
with only their policy strings swapped (``"MlpPolicy"`` -> ``"SparseMlpPolicy"``, likewise
``"CnnPolicy"`` and ``"MultiInputPolicy"``) and a ``conftest.py`` that imports
:mod:`sparse_agents.sb3` (which registers the aliases) and skips the tests in
:data:`SKIP`, each with its reason; ``run`` runs them with pytest in a subprocess and
returns the outcome counts, without the tests SB3 marks ``expensive`` (its own CI
deselects them: a >2 GB model). ``tests/test_sb3_conformance.py`` asserts that none fails.

    python tests/sb3_conformance.py fetch      # once, needs the registry
    python tests/sb3_conformance.py run        # offline; prints the counts
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: where ``fetch`` puts the sdist (ignored by git)
CACHE = ROOT / ".cache" / "sb3"
#: SB3's test modules that exercise a policy: the issue's list and those where it applies
MODULES = ("test_save_load", "test_predict", "test_deterministic", "test_sde", "test_run",
           "test_spaces", "test_train_eval_mode", "test_dict_env", "test_cnn",
           "test_identity", "test_custom_policy", "test_vec_envs")
#: the policy strings swapped for their sparse aliases
POLICIES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")
_IDENTITY = ("a learning-speed threshold (reward 90 after 400-2000 steps, tuned for the "
             "dense policy); the 90% sparse policy learns the task more slowly")
#: test node id (``module.py::function[params]``, or ``module.py::function`` for every
#: parametrisation) -> why it cannot apply to sparse policies
SKIP: dict[str, str] = {
    "test_identity.py::test_discrete[env1-A2C]": _IDENTITY,
    "test_identity.py::test_discrete[env1-PPO]": _IDENTITY,
    "test_identity.py::test_discrete[env2-PPO]": _IDENTITY,
    "test_identity.py::test_continuous[SAC]": _IDENTITY,
    "test_vec_envs.py::test_video_recorder": "renders CartPole, which needs pygame (an "
    "extra of SB3's tests, not installed here); it fails alike with SB3's own MlpPolicy",
}
#: the adaptations beyond the policy strings (module, old, new); each must apply, so an SB3
#: release that changes these lines fails loudly:
#: - tests that write random values into every state_dict entry and compare them all: a
#:   sparse policy's state also holds its masks (bool) and topology state (not a tensor),
#:   structure rather than values, so only the floating-point entries are randomised and
#:   compared;
#: - PPO's CPU hint is checked by calling ``_maybe_recommend_cpu()``, which compares the
#:   policy class's name with its argument, "ActorCriticPolicy": the sparse MlpPolicy's
#:   class name is passed;
#: - the batch-norm tests use ``net_arch=[16, 16]``, which at the default 90% sparsity is
#:   the dead network the thin-layer warning names (no gradient reaches the extractor):
#:   they run at 50%.
PATCHES: tuple[tuple[str, str, str], ...] = (
    ("test_run", "model._maybe_recommend_cpu()",
     'model._maybe_recommend_cpu("SparseActorCriticPolicy")'),
    ("test_train_eval_mode", "policy_kwargs=dict(net_arch=[16, 16], features_extractor_class",
     "policy_kwargs=dict(sparsity=0.5, net_arch=[16, 16], features_extractor_class"),
    ("test_save_load", "th.rand_like(param)", "_random_like(param)"),
    ("test_save_load", "for k in params:", "for k in _values(params):"),
    ("test_save_load", "for key in params:", "for key in _values(params):"),
    ("test_save_load", "for k in original_params[object_name]:",
     "for k in _values(original_params[object_name]):"),
    ("test_save_load", "for key in params[object_name]:",
     "for key in _values(params[object_name]):"),
)
HELPERS = """

def _random_like(t):  # sparse_agents: masks and topology state are not values
    return th.rand_like(t) if isinstance(t, th.Tensor) and t.is_floating_point() else t


def _values(params):  # sparse_agents: the floating-point entries of a state_dict
    return [k for k, v in params.items() if isinstance(v, th.Tensor) and v.is_floating_point()]
"""


def version() -> str:
    """The installed stable-baselines3 version."""
    return metadata.version("stable_baselines3")


def sdist_path() -> Path:
    return CACHE / f"stable_baselines3-{version()}.tar.gz"


def fetch() -> Path:
    """Download the installed SB3 version's sdist into :data:`CACHE` (once)."""
    path = sdist_path()
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "-d", str(CACHE), f"stable-baselines3=={version()}"],
                       check=True)
    return path


def swap_policies(source: str) -> str:
    """``source`` with every quoted SB3 policy alias replaced by its sparse alias."""
    pattern = r"""(["'])(""" + "|".join(POLICIES) + r""")\1"""
    return re.sub(pattern, lambda m: f"{m.group(1)}Sparse{m.group(2)}{m.group(1)}", source)


def adapt(module: str, source: str) -> str:
    """``source`` with the :data:`PATCHES` of ``module`` applied (each must match)."""
    patches = [(old, new) for m, old, new in PATCHES if m == module]
    if not patches:
        return source
    for old, new in patches:
        if old not in source:
            raise ValueError(f"{module}: {old!r} not found: SB3's test changed, review PATCHES")
        source = source.replace(old, new)
    if "_random_like(" not in source:
        return source
    head, sep, rest = source.partition("\n\n\n")  # after the imports
    return head + HELPERS + sep + rest


CONFTEST = '''"""Generated by tests/sb3_conformance.py: SB3's tests with the Sparse* aliases."""
import pytest
import torch

import sparse_agents.sb3  # noqa: F401  (registers the Sparse* aliases)

torch.set_num_threads(1)
SKIP = {skip!r}


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = SKIP.get(item.nodeid, SKIP.get(item.nodeid.split("[")[0]))
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
'''

PYTEST_INI = """[pytest]
markers =
    expensive: SB3's expensive tests
filterwarnings =
    ignore::DeprecationWarning
    ignore::UserWarning:gymnasium
"""


def generate(out: Path, sdist: Path | None = None) -> list[Path]:
    """Write the swapped :data:`MODULES` and the conftest into ``out``."""
    sdist = sdist or sdist_path()
    if not sdist.exists():
        raise FileNotFoundError(f"{sdist} is missing: run python tests/sb3_conformance.py "
                                "fetch (downloads SB3's sdist from the package registry)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(sdist) as tar:
        prefix = f"stable_baselines3-{version()}/tests/"
        for name in MODULES:
            member = tar.extractfile(prefix + name + ".py")
            if member is None:
                raise FileNotFoundError(f"{prefix}{name}.py not in {sdist}")
            path = out / f"{name}.py"
            path.write_text(adapt(name, swap_policies(member.read().decode())))
            written.append(path)
    (out / "conftest.py").write_text(CONFTEST.format(skip=SKIP))
    (out / "pytest.ini").write_text(PYTEST_INI)
    return written


def run(extra: list[str] | None = None, out: Path | None = None) -> tuple[dict[str, int], str]:
    """Run the generated modules; the outcome counts and pytest's output."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = out or Path(tmp) / "sb3_tests"
        generate(folder)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
             "-m", "not expensive", str(folder), *(extra or [])],
            cwd=folder, capture_output=True, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = proc.stdout + proc.stderr
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error", "xfailed", "xpassed")}
    tail = text.strip().splitlines()[-1] if text.strip() else ""
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", tail):
        counts["error" if what.startswith("error") else what] = int(n)
    return counts, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("fetch", "generate", "run"))
    parser.add_argument("--out", type=Path, help="folder for the generated modules")
    args, pytest_args = parser.parse_known_args(argv)
    if args.command == "fetch":
        print(fetch())
    elif args.command == "generate":
        for path in generate(args.out or ROOT / ".cache" / "sb3_tests"):
            print(path)
    else:
        counts, text = run([a for a in pytest_args if a != "--"], args.out)
        print(text)
        print(counts)
        return int(counts["failed"] > 0 or counts["error"] > 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
