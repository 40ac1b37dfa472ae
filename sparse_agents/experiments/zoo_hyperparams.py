"""rl-baselines3-zoo hyperparameter files for the sparse policies, generated from the zoo's.

``hyperparams/<algo>.yml`` holds, for every algorithm that has sparse aliases
(:mod:`sparse_agents.sb3.aliases`), every entry of the INSTALLED rl_zoo3's own
``rl_zoo3/hyperparams/<algo>.yml`` (each environment, ``default`` and ``atari``) with two
keys changed:

* ``policy``: its sparse alias (``'MlpPolicy'`` -> ``'SparseMlpPolicy'``,
  ``'MlpLstmPolicy'`` -> ``'SparseMlpLstmPolicy'``, ...), the name that
  ``--gym-packages sparse_agents.sb3`` registers; an entry whose alias has no sparse
  version is left out and listed in the file's header with the reason;
* ``policy_kwargs``: the zoo's own ``dict(...)`` expression with :data:`SPARSE_OPTIONS`
  added as keywords (``"dict(net_arch=[64, 64])"`` ->
  ``"dict(net_arch=[64, 64], sparsity=0.9, updater='srigl')"``); an entry without one gets
  ``"dict(sparsity=0.9, updater='srigl')"`` unless it inherits one through a YAML merge
  key (``<<: *anchor``), whose source entry then carries it.

The transform works on the zoo file's text, so comments, ordering, anchors, merge keys and
tags (``!!float 1e6``) stay as the zoo wrote them (commented-out lines are the zoo's too,
with the plain aliases). :func:`check` verifies the result by loading both files the way
``rl_zoo3.exp_manager`` does (``yaml.safe_load``, ``eval`` of ``policy_kwargs`` in that
module's namespace): every other key of every entry equals the zoo's.

:data:`EXTRA_ENTRIES` is the one explicit addition beyond the transform: entries the zoo
does not list, copied from one it does (``HalfCheetah-v5`` from ``HalfCheetah-v4`` for PPO
and SAC, which the hand-written files had shipped since docs/rl.md trains them on v5).

Regenerate (after an rl_zoo3 upgrade): ``python scripts/make_zoo_hyperparams.py``;
``--check`` only compares. ``tests/test_rl_zoo.py`` fails when the committed files differ
from :func:`generate`'s output.
"""

from __future__ import annotations

import argparse
import functools
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: what every sparse entry adds to ``policy_kwargs``
SPARSE_OPTIONS: dict[str, Any] = {"sparsity": 0.9, "updater": "srigl"}
#: the repository's hyperparams/ (the default output)
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "hyperparams"
#: algorithm -> {env id the zoo lacks: (the zoo's env id copied, why)}; added only while
#: the zoo's file has no entry of that name
EXTRA_ENTRIES: dict[str, dict[str, tuple[str, str]]] = {
    "ppo": {"HalfCheetah-v5": ("HalfCheetah-v4", "docs/rl.md trains HalfCheetah-v5; the zoo "
                                                 "lists only v4")},
    "sac": {"HalfCheetah-v5": ("HalfCheetah-v4", "docs/rl.md trains HalfCheetah-v5; the zoo "
                                                 "lists only v4")},
}
#: algorithm -> extra header lines (caveats of its sparse classes)
NOTES: dict[str, list[str]] = {
    "trpo": ["TRPO: t_end (when not given) is placed from n_epochs, which TRPO lacks: add",
             "t_end=... to policy_kwargs (sparse_agents.sb3.aliases, docs/ecosystem.md)."],
}
#: the zoo's files that are not algorithms of ``rl_zoo3.utils.ALGOS``, and why
NOT_ALGORITHMS: dict[str, str] = {
    "her": "not an rl_zoo3 algorithm: the zoo's file is kept for reference only (HER is "
           "SAC/TQC/... with replay_buffer_class: HerReplayBuffer, as in sac.yml and tqc.yml)",
}

_TOP_KEY = re.compile(r"^(?P<key>[A-Za-z0-9_][^\s:#]*):(?:[ \t]+&(?P<anchor>[^\s#]+))?"
                      r"[ \t]*(?:#.*)?$")
_POLICY = re.compile(r"^(?P<head>(?P<indent>[ ]+)policy:[ \t]*)(?P<q>['\"]?)(?P<alias>[\w.]+)"
                     r"(?P=q)(?P<rest>[ \t]*(?:#.*)?)$", re.M)
_KWARGS = re.compile(r"^(?P<head>(?P<indent>[ ]+)policy_kwargs:[ \t]*)"
                     r"(?:\"(?P<dq>(?:[^\"\\]|\\.)*)\"|'(?P<sq>(?:[^']|'')*)')", re.M)
_MERGE = re.compile(r"^[ ]+<<:[ \t]*(?P<refs>.*)$", re.M)


def zoo_dir() -> Path:
    """The installed rl_zoo3's ``hyperparams/`` folder."""
    import rl_zoo3

    return Path(rl_zoo3.__file__).resolve().parent / "hyperparams"


def zoo_version() -> str:
    import rl_zoo3

    return rl_zoo3.__version__


@functools.cache
def _zoo_text(algo: str) -> str:
    return (zoo_dir() / f"{algo}.yml").read_text()


@functools.cache
def _zoo(algo: str) -> dict:
    """The zoo's file for ``algo``, loaded as ``rl_zoo3.exp_manager`` loads it (cached:
    read only)."""
    return yaml.safe_load(_zoo_text(algo))


def _algorithms() -> dict[str, type]:
    """``rl_zoo3.utils.ALGOS`` with the sparse aliases registered."""
    from rl_zoo3.utils import ALGOS

    import sparse_agents.sb3  # noqa: F401 - registers the aliases

    return ALGOS


def coverage() -> tuple[list[str], dict[str, str]]:
    """``(covered, {not covered: why})`` over the zoo's hyperparameter files: the algorithms
    with a zoo file and sparse aliases, and the other files."""
    from sparse_agents.sb3.aliases import PREFIX, UNSUPPORTED

    algos = _algorithms()
    covered, skipped = [], {}
    for path in sorted(zoo_dir().glob("*.yml")):
        name = path.stem
        if name not in algos:
            skipped[name] = NOT_ALGORITHMS.get(name, "not in rl_zoo3.utils.ALGOS")
        elif not any(a.startswith(PREFIX) for a in algos[name].policy_aliases):
            cls = algos[name].__name__
            skipped[name] = f"{cls} has no sparse aliases: " + UNSUPPORTED.get(cls, "")
        else:
            covered.append(name)
    return covered, skipped


@functools.cache
def zoo_eval_context() -> dict[str, Any]:
    """The namespace ``rl_zoo3.exp_manager`` evaluates ``policy_kwargs`` in (``nn``,
    ``th``, ``RMSpropTFLike``, ...)."""
    import rl_zoo3.exp_manager

    return dict(vars(rl_zoo3.exp_manager))


def sparse_alias(algo: str, alias: Any) -> tuple[str | None, str]:
    """``(sparse alias, "")`` of a zoo ``policy`` value, or ``(None, why not)``."""
    from sparse_agents.sb3 import SparsePolicyMixin
    from sparse_agents.sb3.aliases import PREFIX

    aliases = _algorithms()[algo].policy_aliases
    if not isinstance(alias, str) or alias not in aliases:
        plain = ", ".join(a for a in aliases if not a.startswith(PREFIX))
        return None, (f"policy {alias!r} is not an alias of {_algorithms()[algo].__name__} "
                      f"({plain}): the zoo's own entry cannot run either")
    sparse = PREFIX + alias
    cls = aliases.get(sparse)
    if not (isinstance(cls, type) and issubclass(cls, SparsePolicyMixin)):
        return None, f"{alias!r} has no sparse version for {_algorithms()[algo].__name__}"
    return sparse, ""


def _options_text(quote: str) -> str:
    return ", ".join(f"{k}={quote}{v}{quote}" if isinstance(v, str) else f"{k}={v!r}"
                     for k, v in SPARSE_OPTIONS.items())


def add_options(expr: str, quote: str = "'") -> str:
    """``expr`` (a ``dict(...)`` expression, as the text of a YAML string, line breaks and
    all) with :data:`SPARSE_OPTIONS` added as its last keywords; string values quoted with
    ``quote``. A closing parenthesis on its own line gets the options on a line of their
    own above it, indented as the line before (or two more than the parenthesis)."""
    body = expr.rstrip()
    trail = expr[len(body):]
    if not (body.lstrip().startswith("dict(") and body.endswith(")")):
        raise ValueError(f"policy_kwargs is not a dict(...) expression: {expr!r}")
    opts = _options_text(quote)
    head = body[:-1]
    last = head.rfind("\n")
    if last >= 0 and not head[last + 1:].strip():  # ")" alone on its line
        close_indent = head[last + 1:]
        content = head[:last].rstrip()
        if "\n" in content:  # as the line before
            prev = content[content.rfind("\n") + 1:]
            indent = prev[:len(prev) - len(prev.lstrip())]
        else:  # that is the first line, whose column the text does not show
            indent = close_indent + "  "
        comma = "" if content.endswith((",", "(")) else ","
        keep = "," if content.endswith(",") else ""
        return f"{content}{comma}\n{indent}{opts}{keep}\n{close_indent}){trail}"
    content = head.rstrip()
    sep = "" if content.endswith("(") else " " if content.endswith(",") else ", "
    return f"{content}{sep}{opts}){trail}"


@dataclass
class _Block:
    key: str
    anchor: str | None
    lines: list[str]  # the key line, then the body up to the next top-level key

    def content_end(self) -> int:
        """Index of the last indented, non-comment line (the entry's last value line)."""
        end = 0
        for i, line in enumerate(self.lines[1:], 1):
            if line[:1] in (" ", "\t") and line.strip() and not line.lstrip().startswith("#"):
                end = i
        return end

    def indent(self) -> str:
        for line in self.lines[1:]:
            if line.strip() and not line.lstrip().startswith("#"):
                return line[:len(line) - len(line.lstrip())]
        return "  "

    def text(self) -> str:
        return "".join(self.lines)


@dataclass
class Generated:
    """One generated file: its text, and the zoo's entries left out ``{env: why}``."""

    algo: str
    text: str
    zoo_entries: list[str]
    entries: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    extras: dict[str, str] = field(default_factory=dict)


def _split(text: str) -> tuple[list[str], list[_Block]]:
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _TOP_KEY.match(line.rstrip("\r\n"))]
    blocks = []
    for n, i in enumerate(starts):
        m = _TOP_KEY.match(lines[i].rstrip("\r\n"))
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        blocks.append(_Block(m["key"], m["anchor"], lines[i:end]))
    return lines[:starts[0] if starts else len(lines)], blocks


def _transform_block(block: _Block, algo: str, entry: dict) -> None:
    """Rewrite ``policy`` and ``policy_kwargs`` in place (``entry``: the zoo's resolved
    entry, for whether it has a ``policy_kwargs`` of its own or inherited)."""
    indent = block.indent()
    body = "".join(block.lines[1:])

    def policy(m: re.Match) -> str:
        if m["indent"] != indent:
            return m[0]
        sparse, why = sparse_alias(algo, m["alias"])
        if sparse is None:
            raise ValueError(f"{algo}: {block.key}: {why}")
        return f"{m['head']}{m['q']}{sparse}{m['q']}{m['rest']}"

    def kwargs(m: re.Match) -> str:
        if m["indent"] != indent:
            return m[0]
        if m["dq"] is not None:  # a double-quoted YAML string: Python strings in '...'
            return m["head"] + '"' + add_options(m["dq"], quote="'") + '"'
        return m["head"] + "'" + add_options(m["sq"], quote='"') + "'"

    body = _KWARGS.sub(kwargs, _POLICY.sub(policy, body))
    lines = [block.lines[0], *body.splitlines(keepends=True)]
    block.lines = lines
    if "policy_kwargs" not in entry and not _MERGE.search(body):
        end = block.content_end()
        opts = _options_text("'")
        line = f'{indent}policy_kwargs: "dict({opts})"\n'
        if not block.lines[end].endswith("\n"):
            block.lines[end] += "\n"
        block.lines.insert(end + 1, line)


def header(algo: str, skipped: dict[str, str], extras: dict[str, str]) -> str:
    """The comment the generated file starts with."""
    opts = _options_text("'")
    lines = [
        "Sparse agents for rl-baselines3-zoo, GENERATED by scripts/make_zoo_hyperparams.py",
        f"(do not edit) from the zoo's own tuned hyperparameters (rl_zoo3 {zoo_version()},",
        f"rl_zoo3/hyperparams/{algo}.yml): every entry of that file, with only `policy` and",
        "`policy_kwargs` changed:",
        "  policy: the sparse alias that `--gym-packages sparse_agents.sb3` registers",
        "          ('MlpPolicy' -> 'SparseMlpPolicy', ...)",
        f"  policy_kwargs: the zoo's own (if any) + {opts}.",
        "Comments, order, anchors and values are the zoo's text (its commented-out lines too,",
        "with the plain aliases).",
        "The topology update schedule is sparse_agents' RL default for the algorithm's family",
        "(sparse_agents.sb3.mixin.FAMILY_DEFAULTS, at the time of writing: on-policy",
        "delta_t=1000, drop_fraction=0.1; off-policy delta_t=1000, drop_fraction=0.5 as",
        "Graesser et al. 2022; cosine decay, updates stop at t_end_fraction=0.8 of the",
        "optimizer steps). To pin it, add e.g. delta_t=1000, drop_fraction=0.1 to",
        "policy_kwargs (any SparsePolicyMixin option goes).",
        *NOTES.get(algo, []),
        f"Train:  python -m rl_zoo3.train --algo {algo} --env ENV --gym-packages "
        "sparse_agents.sb3 \\",
        f"          -conf hyperparams/{algo}.yml",
        "`-optimize` replaces policy_kwargs with the sampled ones (net_arch, activation_fn):",
        "trials run with the defaults above (90% SRigL, the family schedule).",
        "Regenerate (e.g. after upgrading rl_zoo3):  python scripts/make_zoo_hyperparams.py",
    ]
    if skipped:
        lines.append("Left out (no sparse version):")
        lines += _wrapped(skipped)
    if extras:
        lines.append("Added at the end (EXTRA_ENTRIES of sparse_agents.experiments."
                     "zoo_hyperparams):")
        lines += _wrapped(extras)
    return "".join(f"# {line}\n" for line in lines)


def _wrapped(items: dict[str, str]) -> list[str]:
    return [line for env, why in items.items()
            for line in textwrap.wrap(f"{env}: {why}", width=86, initial_indent="  ",
                                      subsequent_indent="    ", break_on_hyphens=False)]


def _refs(block: _Block) -> set[str]:
    out: set[str] = set()
    for m in _MERGE.finditer("".join(block.lines[1:])):
        out |= set(re.findall(r"\*([^\s,\]]+)", m["refs"]))
    return out


def generate(algo: str) -> Generated:
    """The sparse ``hyperparams/<algo>.yml`` from the installed zoo's file."""
    text = _zoo_text(algo)
    zoo = _zoo(algo)
    preamble, blocks = _split(text)
    if [b.key for b in blocks] != list(zoo):
        raise ValueError(f"{algo}.yml: top-level keys read from the text "
                         f"{[b.key for b in blocks]} differ from YAML's {list(zoo)}")
    skipped = {}
    for block in blocks:
        sparse, why = sparse_alias(algo, zoo[block.key].get("policy"))
        if sparse is None:
            skipped[block.key] = why
    kept_refs = set().union(*(_refs(b) for b in blocks if b.key not in skipped))
    out = list(preamble)
    for block in blocks:
        if block.key in skipped:
            if block.anchor and block.anchor in kept_refs:
                raise ValueError(f"{algo}: {block.key} (&{block.anchor}) has no sparse "
                                 "version but entries kept merge it")
            end = block.content_end()
            out.append(f"# {block.key}: left out (no sparse version: see the header)\n")
            out += block.lines[end + 1:]
            continue
        _transform_block(block, algo, zoo[block.key])
        out += block.lines
    extras = {}
    by_key = {b.key: b for b in blocks}
    for env, (source, why) in EXTRA_ENTRIES.get(algo, {}).items():
        if env in zoo or source in skipped:
            continue
        if source not in by_key:
            raise ValueError(f"{algo}: EXTRA_ENTRIES copies {source}, which the zoo lacks")
        if not extras:
            if out and out[-1].strip():
                out[-1] = out[-1] if out[-1].endswith("\n") else out[-1] + "\n"
                out.append("\n")
            out.append("# === sparse_agents additions (not in the zoo's file) ===\n")
        extras[env] = f"the zoo's {source} entry ({why})"
        src = by_key[source]
        body = src.lines[1:src.content_end() + 1]
        out += [f"\n# the zoo's {source} values\n", f"{env}:\n", *body]
    text_out = header(algo, skipped, extras) + "\n" + "".join(out)
    if not text_out.endswith("\n"):
        text_out += "\n"
    entries = [k for k in zoo if k not in skipped] + list(extras)
    return Generated(algo, text_out, list(zoo), entries, skipped, extras)


def expected_entry(algo: str, env: str) -> dict | None:
    """The entry ``hyperparams/<algo>.yml`` must hold for ``env`` (policy_kwargs
    evaluated), computed from the zoo's file alone; ``None``: no entry."""
    zoo = _zoo(algo)
    source = env
    if env not in zoo:
        extra = EXTRA_ENTRIES.get(algo, {}).get(env)
        if extra is None:
            return None
        source = extra[0]
    theirs = dict(zoo[source])
    sparse, _ = sparse_alias(algo, theirs.get("policy"))
    if sparse is None:
        return None
    kwargs = eval(theirs.get("policy_kwargs", "dict()"), zoo_eval_context())
    if set(kwargs) & set(SPARSE_OPTIONS):
        raise ValueError(f"{algo}: {source}: the zoo's policy_kwargs already sets "
                         f"{sorted(set(kwargs) & set(SPARSE_OPTIONS))}")
    theirs.update(policy=sparse, policy_kwargs={**kwargs, **SPARSE_OPTIONS})
    return theirs


def check(algo: str, text: str) -> list[str]:
    """Problems of a sparse ``hyperparams/<algo>.yml`` (its ``text``) against the zoo's
    file, loaded as ``rl_zoo3.exp_manager`` loads them; empty when it is right."""
    ours = yaml.safe_load(text) or {}
    zoo = _zoo(algo)
    envs = list(zoo) + [e for e in EXTRA_ENTRIES.get(algo, {}) if e not in zoo]
    problems = []
    context = zoo_eval_context()
    for env in envs:
        want = expected_entry(algo, env)
        if want is None:
            if env in ours:
                problems.append(f"{algo}: {env} has no sparse version but is listed")
            continue
        if env not in ours:
            problems.append(f"{algo}: {env} missing")
            continue
        got = dict(ours[env])
        kwargs = got.get("policy_kwargs")
        try:
            got["policy_kwargs"] = eval(kwargs, context) if isinstance(kwargs, str) else kwargs
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"{algo}: {env}: policy_kwargs {kwargs!r} does not evaluate: {exc}")
            continue
        for key in sorted(set(got) | set(want)):
            if got.get(key, "<absent>") != want.get(key, "<absent>"):
                problems.append(f"{algo}: {env}: {key} is {got.get(key, '<absent>')!r}, "
                                f"expected {want.get(key, '<absent>')!r}")
    problems += [f"{algo}: {env} is neither the zoo's nor an EXTRA_ENTRIES entry"
                 for env in ours if env not in envs]
    return problems


def build_parser() -> argparse.ArgumentParser:
    opts = _options_text("'")
    parser = argparse.ArgumentParser(
        description="Write hyperparams/<algo>.yml for every rl_zoo3 algorithm with sparse "
                    "aliases: the installed zoo's entries with the sparse policy aliases and "
                    f"{opts} in policy_kwargs.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder to write (default: the repository's hyperparams/)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from the generated one")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    covered, not_covered = coverage()
    stale = []
    print(f"rl_zoo3 {zoo_version()} ({zoo_dir()})")
    print(f"{'algo':<10} {'zoo':>4} {'sparse':>6} {'left out':>8} {'added':>5}")
    for algo in covered:
        gen = generate(algo)
        problems = check(algo, gen.text)
        if problems:
            raise RuntimeError("generated file fails its check:\n" + "\n".join(problems))
        path = args.out / f"{algo}.yml"
        print(f"{algo:<10} {len(gen.zoo_entries):>4} {len(gen.entries):>6} "
              f"{len(gen.skipped):>8} {len(gen.extras):>5}")
        for env, why in gen.skipped.items():
            print(f"    left out {env}: {why}")
        if args.check:
            if not path.exists() or path.read_text() != gen.text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(gen.text)
    for name, why in not_covered.items():
        print(f"{name:<10} not covered: {why}")
    if stale:
        print("differ from the generated files (run scripts/make_zoo_hyperparams.py):")
        print("\n".join(f"  {p}" for p in stale))
        return 1
    return 0
