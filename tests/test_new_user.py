"""What a new user trips over (issue #18): each case says one line about the right thing, fast, and leaves the
user's files as a teammate can read them, or nothing at all."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from packaging.requirements import Requirement
from packaging.version import Version

import vrp_bench
from vrp_bench import checkpoint_location
from vrp_bench.api.errors import UsageError
from vrp_bench.api.files import current_umask
from vrp_bench.api.model import VLM
from vrp_bench.builtins import builtin_checkpoints, register_builtins
from vrp_bench.checkpoint_location import STUDY_CHECKPOINTS
from vrp_bench.report.results import sample_logs
from vrp_bench.report.writer import jsonl_lines, jsonl_text
from vrp_bench.zoo import CHECKPOINTS
from vrp_bench.zoo.recipes import RECIPES
from vrp_bench.zoo.train import BATCH_SIZE, training_command

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "baselines" / "tiny_llava"


def one_error_line(result: tuple[int, str, str], *fragments: str) -> str:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vrp-bench: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def in_fresh_python(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, bool]:
    """``vrp-bench ARGS`` in a new interpreter: (exit code, stderr, whether torch was imported by then)."""
    code = ("import sys\nfrom vrp_bench.cli import main\ncode = main(sys.argv[1:])\n"
            "print('torch' in sys.modules)\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})}, timeout=120)
    return result.returncode, result.stderr, result.stdout.strip() == "True"


# -- 1. a doc_to_target / doc_to_text that is neither a column nor a template ----------------------------------

def typo_task(folder: Path, name: str, target: str, text: str = "question") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "d.jsonl").write_text('{"question": "what colour?", "answer": "red"}\n' * 3)
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: d.jsonl}}}}\ntest_split: test\n"
        f"doc_to_text: {text}\ndoc_to_target: {target}\n")
    return folder


@pytest.mark.parametrize("key", ["doc_to_target", "doc_to_text"])
def test_a_field_typo_warns_and_names_the_column(cli, tmp_path, caplog, key):
    fields = {"target": "answr"} if key == "doc_to_target" else {"target": "answer", "text": "qestion"}
    folder = typo_task(tmp_path / "tasks", "typo", **fields)
    code, _, err = cli("--model", "constant", "--tasks", "typo", "--include_path", folder)
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "names no column" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    typo = fields["target"] if key == "doc_to_target" else fields["text"]
    assert f"{key} '{typo}' names no column" in warnings[0] and "did you mean" in warnings[0]
    assert "write it as a template" in warnings[0]


@pytest.mark.parametrize("target, text", [("answer", "question"), ("\"{{ 'red' }}\"", "question"),
                                          ("answer", "Describe the image briefly."), ("''", "question")])
def test_columns_templates_and_sentences_do_not_warn(cli, tmp_path, caplog, target, text):
    folder = typo_task(tmp_path / "tasks", "fine", target, text)
    code, _, err = cli("--model", "constant", "--tasks", "fine", "--include_path", folder)
    assert code == 0, err
    assert "names no column" not in caplog.text


# -- 2. hub models offline, and local folders that are not there ----------------------------------------------

@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """A hub at a port nothing listens on, an empty cache, HF_HUB_OFFLINE unset."""
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    checkpoint_location.hub_reachable.cache_clear()
    yield tmp_path / "hub"
    checkpoint_location.hub_reachable.cache_clear()


def test_offline_hub_model_is_one_line_before_torch_is_imported(tmp_path):
    """No retries: the hub is tried once, before torch and transformers are imported (the run fails in well under
    a second, where it took ~30 s and 46 log lines)."""
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "",
           "TRANSFORMERS_OFFLINE": ""}
    code, err, torch_imported = in_fresh_python("--model", "qwen2_vl", "--tasks", "vrp_shapes_color", env=env)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot be reached" in err and "HF_HUB_OFFLINE=1" in err and "pretrained=/path/to/folder" in err
    assert not torch_imported
    code, err, _ = in_fresh_python("--model", "qwen2_vl", "--tasks", "vrp_shapes_color",
                                   env={**env, "HF_HUB_OFFLINE": "1"})
    assert code == 2 and len(err.strip().splitlines()) == 1 and "HF_HUB_OFFLINE is set" in err, err


def test_an_unreachable_hub_loads_a_cached_model_from_the_cache(unreachable_hub, monkeypatch):
    snapshot = unreachable_hub / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (unreachable_hub / "models--org--tiny" / "refs").mkdir()
    (unreachable_hub / "models--org--tiny" / "refs" / "main").write_text("abc123")
    assert checkpoint_location.locate("org/tiny") == {"local_files_only": True}
    with pytest.raises(UsageError, match="cannot be reached"):
        checkpoint_location.locate("org/other")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # transformers reads the cache itself then
    assert checkpoint_location.locate("org/tiny") == {}


def test_behind_a_proxy_the_proxy_is_probed(monkeypatch):
    """Where only a proxy leads out (HTTPS_PROXY), the hub counts as reachable when the proxy is."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    try:
        checkpoint_location.hub_reachable.cache_clear()
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert checkpoint_location.hub_reachable("https://hub.invalid")
        checkpoint_location.hub_reachable.cache_clear()
        monkeypatch.delenv("HTTPS_PROXY")
        monkeypatch.delenv("https_proxy", raising=False)
        assert not checkpoint_location.hub_reachable("https://hub.invalid")
    finally:
        listener.close()
        checkpoint_location.hub_reachable.cache_clear()


def test_a_missing_local_folder_says_so(cli, tmp_path):
    for missing in ("/no/such/dir", "./no_such_dir", str(tmp_path / "absent")):
        one_error_line(cli("--model", "llava", "--model_args", f"pretrained={missing}", "--tasks", "vrp_shapes_color"),
                       f"pretrained={missing}: no such folder")
    one_error_line(cli("--model", "llava", "--model_args", f"pretrained={tmp_path}", "--tasks", "vrp_shapes_color"),
                   "has no config.json")


def test_builtin_names_known_without_torch_are_the_registered_ones():
    register_builtins()
    from vrp_bench.api.model import MODELS
    from vrp_bench.models.families import FAMILIES

    assert set(STUDY_CHECKPOINTS) == set(FAMILIES) == set(RECIPES)
    builtins = {name for name in MODELS if name == "constant" or name in FAMILIES or name.startswith("tiny_")}
    assert set(builtin_checkpoints()) == builtins
    assert all(MODELS.get(name).default_pretrained == checkpoint for name, checkpoint in builtin_checkpoints().items()
               if checkpoint is not None)


# -- 3. messages that blamed the wrong thing -----------------------------------------------------------------

def test_a_gen_kwargs_typo_blames_the_flag_not_the_task_yaml(cli):
    line = one_error_line(cli("--model", "constant", "--tasks", "vrp_shapes_color", "--gen_kwargs", "max_new_tokes=5"),
                          "--gen_kwargs: unknown generation_kwargs key 'max_new_tokes'", "did you mean max_new_tokens")
    assert ".yaml" not in line
    one_error_line(cli("--model", "constant", "--tasks", "vrp_shapes_color", "--gen_kwargs", "max_new_tokens=0"),
                   "--gen_kwargs: bad generation_kwargs: max_new_tokens must be a positive int")


def test_score_without_traces_says_to_save_them(cli, tmp_path):
    """The baseline run captured hidden states (its report has probes) but was saved without --save_traces."""
    code, out, err = cli("score", BASELINE)
    assert code == 0, err
    assert out.count("the run captured hidden states but did not save them: re-run it with --save_traces") == 2
    assert "no hidden states were captured" not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there")
def test_a_cuda_device_map_on_a_cpu_torch_is_a_usage_error(cli):
    one_error_line(cli("--model", "tiny_llava", "--model_args", "device_map=cuda", "--tasks", "vrp_shapes_color"),
                   "device_map=cuda: this machine has 0 CUDA device(s); use device_map=cpu or auto")
    one_error_line(cli("--model", "tiny_llava", "--device", "cuda", "--tasks", "vrp_shapes_color"),
                   "--device cuda: this machine has 0 CUDA device(s)")


def test_a_broken_line_of_a_samples_file_is_named(cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(BASELINE, run)
    samples = sorted(run.glob("*_samples_vrp_shapes_color.jsonl"))[0]
    lines = samples.read_text(encoding="utf-8").split("\n")
    lines[14] = lines[14][: len(lines[14]) // 2]
    samples.write_text("\n".join(lines), encoding="utf-8")
    one_error_line(cli("score", run), f"{samples.name}:15: not JSON")
    one_error_line(cli("score", samples), "holds per-sample records, not a run's results")


def test_jsonl_lines_split_at_newlines_only():
    """JSON written with ensure_ascii=False keeps U+2028 and U+0085 unescaped; str.splitlines splits at them."""
    records = [{"answer": "red\u2028blue\x85"}, {"answer": "green"}]
    text = jsonl_text(records)
    assert len(text.splitlines()) == 4 and len(jsonl_lines(text)) == 2

    class Run:
        results = {"t": type("R", (), {"records": [type("S", (), {"to_json": lambda self, r=r: r})() for r in records]})}

    assert sample_logs(Run()) == {"t": records}


# -- 4. result files as readable as any other file of the user; nothing left by a failed run -----------------

def test_result_and_cache_files_follow_the_umask(cli, tmp_path):
    previous = os.umask(0o022)
    try:
        code, _, err = cli("--model", "tiny_llava", "--model_args", "sc_samples=0", "--tasks", "vrp_shapes_color",
                           "--limit", "2", "--output_path", tmp_path / "out", "--log_samples", "--bootstrap_resamples",
                           "100", "--permutations", "0")
    finally:
        os.umask(previous)
    assert code == 0, err
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.suffix == ".npz" and "cache" in p.parts for p in files)  # the sample cache is there too
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}


class Interrupted(VLM):
    """A model whose first batch is interrupted (Ctrl-C)."""

    def generate(self, requests):
        raise KeyboardInterrupt


def test_a_failed_or_interrupted_run_leaves_no_folder(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        vrp_bench.evaluate(Interrupted(), "vrp_shapes_color", limit=2, output_path=tmp_path / "new" / "out",
                           cache_dir=tmp_path / "new_cache")
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "out" / "Interrupted"
    (kept / "older.txt").parent.mkdir(parents=True)
    (kept / "older.txt").write_text("an earlier run's file")
    with pytest.raises(KeyboardInterrupt):
        vrp_bench.evaluate(Interrupted(), "vrp_shapes_color", limit=2, output_path=tmp_path / "out")
    assert [p.name for p in kept.iterdir()] == ["older.txt"]  # the folder was there before: it stays


# -- 5. zoo train: a new folder by default, the shipped checkpoint again with the defaults -------------------

def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_zoo_train_without_output_leaves_the_shipped_checkpoint(cli, tmp_path, monkeypatch):
    shipped = folder_digest(CHECKPOINTS / "paligemma")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("zoo", "train", "--family", "paligemma", "--steps", "2", "--no-evaluate")
    assert code == 0, err
    assert (tmp_path / "tiny_paligemma" / "model.safetensors").is_file() and "tiny_paligemma" in out
    assert (tmp_path / "tiny_paligemma").stat().st_mode & 0o777 == 0o777 & ~current_umask()
    one_error_line(cli("zoo", "train", "--family", "paligemma", "--steps", "2", "--no-evaluate"), "already exists")
    assert folder_digest(CHECKPOINTS / "paligemma") == shipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_paligemma"]  # no staging folder left


def card_facts(family: str) -> dict[str, str]:
    card = (CHECKPOINTS / family / "MODEL_CARD.md").read_text()
    return dict(re.findall(r"^\| (\w+) \| (.*?) \|$", card, flags=re.MULTILINE))


@pytest.mark.parametrize("family", list(RECIPES))
def test_zoo_train_defaults_are_the_shipped_checkpoints_settings(family):
    """The documented `vrp-bench zoo train --family F` runs what made the shipped checkpoint: its steps, seed 0,
    its batch size, no time cap; and its card's command is that command."""
    facts = card_facts(family)
    assert int(facts["steps"]) == int(facts["steps_run"]) == RECIPES[family].steps
    assert facts["seed"] == "0" and int(facts["batch_size"]) == BATCH_SIZE and facts["seconds_cap"] == "None"
    command = training_command({"family": family, "seed": 0, "steps": RECIPES[family].steps, "seconds_cap": None})
    assert command in (CHECKPOINTS / family / "MODEL_CARD.md").read_text()


@pytest.mark.skipif(not os.environ.get("VRP_SLOW_TESTS"), reason="about 4 minutes of CPU: set VRP_SLOW_TESTS=1")
def test_zoo_train_with_the_defaults_reproduces_the_shipped_weights(cli, tmp_path, monkeypatch):
    """The whole documented command: the same weights, bit for bit (on this machine's torch build)."""
    from vrp_bench.api.model import MODELS

    monkeypatch.chdir(tmp_path)
    code, _, err = cli("zoo", "train", "--family", "qwen2_5_vl", "--no-evaluate")
    assert code == 0, err
    register_builtins()
    retrained = MODELS.get("qwen2_5_vl").from_args({"pretrained": str(tmp_path / "tiny_qwen2_5_vl")}, device="cpu")
    shipped = MODELS.get("tiny_qwen2_5_vl").from_args({}, device="cpu")
    assert retrained.describe()["fingerprint"] == shipped.describe()["fingerprint"]


# -- 6. the README's install: the CPU build of torch on a stock machine --------------------------------------

def test_readme_installs_the_cpu_torch_that_ci_installs_and_pyproject_admits():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Install\n\n```bash\n(.*?)```", readme, flags=re.DOTALL).group(1).strip().splitlines()
    assert len(block) == 2 and block[1].startswith('pip install -e ".[dev]"'), block
    torch_line = block[0].split("#")[0].strip()
    match = re.fullmatch(r'pip install "torch==([\d.]+)" --index-url https://download.pytorch.org/whl/cpu', torch_line)
    assert match, torch_line
    pyproject = (ROOT / "pyproject.toml").read_text()
    requirement = Requirement(re.search(r'"(torch[^"]*)"', pyproject).group(1))
    assert Version(match.group(1)) in requirement.specifier
    assert torch_line.replace("pip install", "python -m pip install -q") in (ROOT / ".ci" / "run").read_text()


# -- 7. names are checked before torch is imported -----------------------------------------------------------

@pytest.mark.parametrize("model, tasks, message", [("tiny_qwen2_vl", "vrp_shapes_colr", "unknown task"),
                                                   ("tiny_qwen2vl", "all", "unknown model")])
def test_an_unknown_task_or_model_errors_before_torch_is_imported(model, tasks, message):
    code, err, torch_imported = in_fresh_python("--model", model, "--tasks", tasks)
    assert code == 2 and message in err and "did you mean" in err and len(err.strip().splitlines()) == 1, err
    assert not torch_imported
