"""The CLI end to end, in subprocesses, as a user runs it."""

import json

from conftest import run_cli

from rlhf.store import Store


def test_help_lists_every_command_and_documents_flags():
    top = run_cli("--help")
    assert top.returncode == 0
    for command in ["projects", "prepare-model", "generate", "chat", "serve"]:
        assert command in top.stdout
    generate = run_cli("generate", "--help")
    text = " ".join(generate.stdout.split())
    for flag in ["--project", "--prompts", "--num-candidates", "--model", "--max-new-tokens", "--temperature",
                 "--top-p", "--seed", "--device", "--dtype"]:
        assert flag in text
    assert "Candidate answers sampled per prompt" in text


def test_generate_end_to_end(tmp_path, tiny_model_dir, rlhf_home):
    assert run_cli("projects", "--create", "tutor").returncode == 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is an opossum?\n\nWhy do opossums play dead?\n")
    done = run_cli("generate", "--project", "tutor", "--prompts", str(prompts), "--model", str(tiny_model_dir),
                   "--num-candidates", "3", "--max-new-tokens", "6", "--seed", "4")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["prompt"], x["candidate"]) for x in lines] == [
        (p, k) for p in ["What is an opossum?", "Why do opossums play dead?"] for k in range(3)]
    store = Store.open("tutor")
    completions = store.completions()
    assert [c.id for c in completions] == [x["id"] for x in lines]
    run = store.generation_run(completions[0].run_id)
    assert run["model_spec"] == str(tiny_model_dir) and run["params"]["seed"] == 4
    assert run["params"]["num_candidates"] == 3 and run["params"]["max_new_tokens"] == 6
    assert "stored 6 candidates for 2 prompts" in done.stderr


def test_generate_reads_prompts_from_stdin(tiny_model_dir):
    run_cli("projects", "--create", "p")
    done = run_cli("generate", "--project", "p", "--prompts", "-", "--model", str(tiny_model_dir),
                   "--max-new-tokens", "4", stdin="Hello there\n")
    assert done.returncode == 0, done.stderr
    assert [p.text for p in Store.open("p").prompts()] == ["Hello there"]


def test_bad_input_exits_non_zero_with_one_line_and_leaves_the_store_untouched(tmp_path, tiny_model_dir):
    run_cli("projects", "--create", "p")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    good = tmp_path / "good.txt"
    good.write_text("What is an opossum?\n")
    long = tmp_path / "long.txt"
    long.write_text("opossum " * 400 + "\n")
    model = ["--model", str(tiny_model_dir)]
    cases = {
        "none given": ["generate", "--project", "p", "--prompts", str(empty), *model],
        "exceeds the model's context": ["generate", "--project", "p", "--prompts", str(long), *model],
        "temperature": ["generate", "--project", "p", "--prompts", str(good), "--temperature", "0", *model],
        "top_p": ["generate", "--project", "p", "--prompts", str(good), "--top-p", "1.5", *model],
        "num_candidates": ["generate", "--project", "p", "--prompts", str(good), "--num-candidates", "1", *model],
        "does not exist (projects: p); create it with `python -m rlhf projects --create nope`":
            ["generate", "--project", "nope", "--prompts", str(good), *model],
        "not a valid name": ["projects", "--create", "../escape"],
    }
    for expected, args in cases.items():
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert set(Store.open("p").counts().values()) == {0}
    assert not (tmp_path.parent / "escape").exists()


def test_annotate_stats_export_import_end_to_end(tmp_path, tiny_model_dir):
    run_cli("projects", "--create", "loop")
    assert run_cli("generate", "--project", "loop", "--prompts", "-", "--model", str(tiny_model_dir),
                   "--num-candidates", "3", "--max-new-tokens", "6", stdin="one\ntwo\n").returncode == 0
    judge = tmp_path / "judges.py"
    judge.write_text("def shorter(prompt, a, b):\n    return 'a' if len(a) <= len(b) else 'b'\n")
    done = run_cli("annotate", "--project", "loop", "--judge", f"{judge}:shorter", "--limit", "5", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert "judge:shorter voted on 5 pairs" in done.stderr
    rest = run_cli("annotate", "--project", "loop", "--judge", f"{judge}:shorter")
    assert "voted on 1 pairs" in rest.stderr  # 2 prompts x 3 candidates = 6 pairs in all
    votes = Store.open("loop").votes()
    assert len(votes) == 6 and {v["annotator"] for v in votes} == {"judge:shorter"}
    for v in votes:  # the judge's answers are stored like a person's: the shorter answer won
        pair = Store.open("loop").pair(v["pair_id"])
        winner, loser = (pair["text_a"], pair["text_b"]) if v["choice"] == "a" else (pair["text_b"], pair["text_a"])
        assert len(winner) <= len(loser)

    stats = run_cli("stats", "--project", "loop", "--json")
    assert json.loads(stats.stdout)["votes"] == 6
    assert "judge:shorter" in run_cli("stats", "--project", "loop").stdout

    exported = run_cli("export", "--project", "loop", "--out", str(tmp_path / "export"))
    assert exported.returncode == 0 and '"train": 6' in exported.stdout
    imported = run_cli("import", "--project", "copy", "--create", "--source", str(tmp_path / "export"))
    assert imported.returncode == 0, imported.stderr
    assert len(Store.open("copy").votes()) == 6


def test_guidelines_command_versions(tmp_path):
    run_cli("projects", "--create", "g")
    new = tmp_path / "guidelines.md"
    new.write_text("Biology tutor: accuracy first.")
    done = run_cli("guidelines", "--project", "g", "--set", str(new), "--author", "owner")
    assert done.returncode == 0 and "version 2" in done.stderr
    assert run_cli("guidelines", "--project", "g").stdout.strip() == "Biology tutor: accuracy first."


def test_bad_judges_and_sources_fail_cleanly(tmp_path):
    run_cli("projects", "--create", "p")
    judge = tmp_path / "judge.py"
    judge.write_text("def odd(prompt, a, b):\n    return 'left'\n")
    cases = {
        "not of the form": ["annotate", "--project", "p", "--judge", "nocolon"],
        "has no function named 'missing' (its functions: odd)": ["annotate", "--project", "p", "--judge",
                                                                 f"{judge}:missing"],
        "could not read": ["import", "--project", "p", "--source", str(tmp_path / "nothing-here")],
        "no votes yet": ["export", "--project", "p", "--out", str(tmp_path / "out")],
    }
    for expected, args in cases.items():
        result = run_cli(*args)
        assert result.returncode == 2 and expected in result.stderr, (args, result.stderr)


def fix_in(message: str) -> list[str]:
    """The `python -m rlhf ...` command an error message names, as the words after `python -m rlhf`."""
    import re
    import shlex

    [command] = re.findall(r"`python -m rlhf ([^`]+)`", message)
    return shlex.split(command)


def test_a_missing_project_or_checkpoint_names_the_command_that_fixes_it(capsys):
    """In this process (`rlhf.__main__.main`, as `python -m rlhf` runs it): each error's own command is run as named."""
    from rlhf.__main__ import main

    for name in ("new", "meme bot"):  # a name with a space comes back quoted for the shell
        assert main(["stats", "--project", name]) == 2
        fix = fix_in(capsys.readouterr().err)
        assert fix == ["projects", "--create", name]
        assert main(fix) == 0 and main(["stats", "--project", name]) == 0
    capsys.readouterr()
    assert main(["score", "--project", "new", "--prompt", "q", "--response", "a"]) == 2
    error = capsys.readouterr().err
    assert "has no reward checkpoint yet" in error and fix_in(error) == ["train-reward", "--project", "new"]
