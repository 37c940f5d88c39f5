"""The command line's parsing: generated flags, config files, precedence, and every bad input
refused with status 2 (usage) or 1 (target, spec) and one clear message, before any run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import lightkit as lk
from lightkit.engine.config import TrainerConfig
from lightkit.utils.config_file import UNSET, Unwritable, to_toml
from tests.cli.conftest import TINY


def print_config(run_cli, *args: str) -> dict:
    code, out, err = run_cli("fit", *args, "--print-config", "json")
    assert code == 0, err
    return json.loads(out)


# -- flags from the spec and from TrainerConfig --------------------------------------------------


def test_help_lists_every_flag_with_its_type_and_default(run_cli):
    code, out, _ = run_cli("fit", TINY, "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps lines
    for expected in [
        "--lr FLOAT learning rate. [float; default: 0.05; used by optim]",
        "--hidden INT hidden units. [int; default: 4; used by net]",
        "--activation {relu,tanh} [one of relu, tanh; default: 'relu'; used by net]",
        "--init {zeros,default} [one of zeros, default; default: 'default'; used by net]",
        "--shuffle [true|false], --no-shuffle [bool; default: True; used by train_loader]",
        "--enable-progress-bar [true|false], --no-enable-progress-bar [bool; default: True]",
        "A boolean flag is given as --FLAG or --no-FLAG, or with a value: --FLAG true|false",
        "--betas [FLOAT ...] [tuple[float, float]; default: (0.9, 0.99); used by optim]",
        "--weight-decay FLOAT|none [Optional[float]; default: None; used by optim]",
        "--batch-size INT [int; default: 4; used by train_loader, val_loader, test_loader, predict_loader]",
        "--max-epochs INT|none Stop after this many epochs (-1: no limit). [int | None; default: None]",
        "--accumulate-grad-batches INT Step the optimizer every k batches. [int; default: 1]",
    ]:
        assert expected in text
    for name in TrainerConfig.model_fields:
        assert "--" + name.replace("_", "-") in out
    assert "--config FILE" in out and "--print-config" in out and "--ckpt-path PATH" in out


def test_help_without_a_target_lists_the_trainer_flags(run_cli):
    code, out, _ = run_cli("fit", "--help")
    assert code == 0
    assert "--max-epochs" in out and "give a TARGET to see its hyperparameter flags" in out


def test_top_level_help_and_unknown_command(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0 and "explain" in out and "TARGET is a .py file" in out
    code, _, err = run_cli("fitt", TINY)
    assert code == 2
    assert "unknown command 'fitt'. Did you mean 'fit'?" in err


def test_flags_set_hyperparameters_and_trainer_fields(run_cli):
    config = print_config(
        run_cli,
        TINY,
        "--lr", "3e-4", "--hidden", "16", "--no-shuffle", "--activation", "tanh",
        "--init", "ZEROS", "--betas", "0.8", "0.95", "--weight-decay", "0.1", "--tags", "x", "y",
        "--max-epochs", "3", "--precision", "bf16", "--devices", "2", "--strategy", "ddp",
        "--val-check-interval", "0.5", "--limit-train-batches", "3", "--gradient-clip-val",
        "none", "--max_steps", "7", "--ckpt-path", "last",
    )  # fmt: skip
    assert config["target"] == [TINY]
    assert config["ckpt_path"] == "last"
    hp = config["hparams"]
    assert hp["lr"] == 3e-4 and hp["hidden"] == 16 and hp["shuffle"] is False
    assert hp["activation"] == "tanh" and hp["init"] == "zeros"
    assert hp["betas"] == [0.8, 0.95] and hp["weight_decay"] == 0.1 and hp["tags"] == ["x", "y"]
    tr = config["trainer"]
    assert tr["max_epochs"] == 3 and tr["max_steps"] == 7
    assert tr["precision"] == "bf16-mixed"  # the alias, validated and made canonical
    assert tr["devices"] == 2 and tr["strategy"] == "ddp"
    assert tr["val_check_interval"] == 0.5 and tr["limit_train_batches"] == 3
    assert tr["gradient_clip_val"] is None


def test_a_hyperparameter_named_like_a_trainer_flag_gets_a_prefixed_flag(run_cli):
    config = print_config(
        run_cli, "tests.user_modules.cli_clash", "--hparams.seed", "5", "--seed", "7"
    )
    assert config["hparams"]["seed"] == 5
    assert config["trainer"]["seed"] == 7


def test_the_prefixed_flag_is_the_same_in_commands_without_trainer_flags(run_cli):
    # A flag copied from a fit command line means the same in spec: no silent change of meaning.
    code, out, err = run_cli("spec", "tests.user_modules.cli_clash", "--hparams.seed", "5")
    assert code == 0, err
    assert json.loads(out)["hparams"]["seed"] == 5
    code, _, err = run_cli("spec", "tests.user_modules.cli_clash", "--seed", "5")
    assert code == 2
    assert (
        "--seed is a trainer flag, and `lightkit spec` takes hyperparameters only (it trains "
        "nothing): leave it out. The hyperparameter of that name is --hparams.seed."
    ) in err
    code, _, err = run_cli("hparams", "tests.user_modules.cli_clash", "--max-epochs", "1")
    assert code == 2
    assert "--max-epochs is a trainer flag, and `lightkit hparams` takes hyperparameters" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "abc"], "argument --lr: expected float, got 'abc': Input should be a valid number"),
        (["--lr", "-1"], "argument --lr: expected float, got '-1': Input should be greater than 0"),
        (["--hidden", "1.5"], "argument --hidden: expected int, got '1.5'"),
        (["--hidden", "0"], "argument --hidden: expected int, got '0': Input should be greater than or equal to 1"),
        (["--activation", "sigmoid"], "argument --activation: expected one of relu, tanh, got 'sigmoid'"),
        (["--betas", "0.9", "x"], "argument --betas: expected tuple[float, float], got '0.9 x'"),
        (["--betas", "0.9"], "argument --betas: expected tuple[float, float], got '0.9': too few values: item 2 is missing"),
        (["--max-epochs", "two"], "argument --max-epochs: expected int | None, got 'two'"),
        (["--precision", "bf17"], "argument --precision: expected 32-true, 64-true, 16-mixed, bf16-mixed, 16-true or bf16-true, got 'bf17': precision='bf17' is not a precision"),
        (["--strategy", "dpp"], "argument --strategy: expected auto, single_device, ddp or fsdp, got 'dpp'"),
        (["--callbacks", "NoSuchCallback"], "argument --callbacks: expected module:Class references, got 'NoSuchCallback': cannot import 'NoSuchCallback'"),
        (["--callbacks", "EarlyStoping(patience=2)"], "cannot import 'EarlyStoping': module 'lightkit.callbacks' has no attribute 'EarlyStoping'. Did you mean 'EarlyStopping'?"),
        (["--min-epochs", "3", "--max-epochs", "2"], "the trainer flags conflict: min_epochs=3 is more than max_epochs=2"),
        (["--lrr", "1"], "unknown flag --lrr. Did you mean '--lr'?"),
        (["--lr", "1", "stray"], "unexpected argument 'stray': TARGETs come first"),
        (["--no-shuffle", "--shuffle", "maybe"], "argument --shuffle: expected true, false, 1, 0, yes or no, got 'maybe'."),
        (["--enable-progress-bar", "2"], "argument --enable-progress-bar: expected true, false, 1, 0, yes or no, got '2'."),
        (["--no-enable-progress-bar", "false"], "argument --no-enable-progress-bar: takes no value, got 'false'; write --no-enable-progress-bar alone, or --enable-progress-bar true|false."),
        (["--no-shuffle=yes"], "argument --no-shuffle: takes no value, got 'yes'"),
    ],
)  # fmt: skip
def test_a_bad_flag_exits_2_naming_the_flag_before_anything_is_built(
    run_cli, nothing_runs, args, message
):
    code, out, err = run_cli("fit", TINY, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize(
    ("args", "value"),
    [
        ([], None),  # the default
        (["--{}"], True),
        (["--no-{}"], False),
        (["--{}", "false"], False),
        (["--{}", "FALSE"], False),
        (["--{}", "True"], True),
        (["--{}", "0"], False),
        (["--{}", "1"], True),
        (["--{}", "no"], False),
        (["--{}", "YES"], True),
        (["--{}=false"], False),
        (["--{}=true"], True),
        (["--no-{}", "--{}", "true"], True),  # the last one wins
        (["--{}", "false", "--{}"], True),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, list) else repr(a),
)
@pytest.mark.parametrize(
    ("option", "section", "name", "default"),
    [
        ("enable-progress-bar", "config", "enable_progress_bar", True),
        ("enable_checkpointing", "config", "enable_checkpointing", True),  # underscores too
        ("shuffle", "spec", "shuffle", True),  # a bool hyperparameter
    ],
)
def test_boolean_flags_take_no_value_a_no_prefix_or_a_word(
    args, value, option, section, name, default
):
    from lightkit.cli.parse import parse

    argv = [a.format(option) for a in args]
    parsed = parse("fit", [TINY, *argv, "--max-epochs", "1"])
    got = (
        getattr(parsed.config, name) if section == "config" else getattr(parsed.spec.hparams, name)
    )
    assert got is (default if value is None else value)
    assert parsed.config.max_epochs == 1  # a value taken by a flag never swallows the next one


@pytest.mark.parametrize(
    ("args", "value"),
    [([], None), (["--{}"], True), (["--no-{}"], False), (["--{}", "none"], None),
     (["--{}", "true", "--{}", "null"], None), (["--{}", "False"], False)],
    ids=lambda a: " ".join(a) if isinstance(a, list) else repr(a),
)  # fmt: skip
@pytest.mark.parametrize(
    ("option", "section", "name"),
    [("benchmark", "config", "benchmark"), ("fused", "spec", "fused")],
)
def test_optional_boolean_flags_also_take_none(args, value, option, section, name):
    from lightkit.cli.parse import parse

    argv = [a.format(option) for a in args]
    parsed = parse("fit", ["tests.user_modules.edge_hparams", *argv, "--max-epochs", "1"])
    got = (
        getattr(parsed.config, name) if section == "config" else getattr(parsed.spec.hparams, name)
    )
    assert got is value
    assert parsed.config.max_epochs == 1


def test_optional_boolean_flags_show_their_three_values_in_help(run_cli):
    code, out, _ = run_cli("fit", "tests.user_modules.edge_hparams", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "--fused [true|false|none], --no-fused [bool | None; default: None; used by" in text
    assert "--benchmark [true|false|none], --no-benchmark" in text


def test_lightning_style_boolean_values_run(run_cli, tmp_path):
    code, _, err = run_cli(
        "fit", TINY, "--enable-progress-bar", "false", "--enable-model-summary", "False",
        "--enable-checkpointing", "no", "--logger", "false", "--max-epochs", "1",
        "--limit-train-batches", "1", "--limit-val-batches", "0",
        "--default-root-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert not list(tmp_path.rglob("*.ckpt"))  # --enable-checkpointing no


def test_a_hyperparameter_named_like_a_negated_trainer_flag_gets_a_prefixed_flag(run_cli, tmp_path):
    target = tmp_path / "negated.py"
    target.write_text(
        "import torch\n"
        "import lightkit as lk\n\n\n"
        "@lk.model\n"
        "def net(no_enable_checkpointing: int = 1):\n"
        "    return torch.nn.Linear(1, no_enable_checkpointing)\n"
    )
    config = print_config(
        run_cli, str(target), "--hparams.no-enable-checkpointing", "3", "--no-enable-checkpointing"
    )
    assert config["hparams"]["no_enable_checkpointing"] == 3
    assert config["trainer"]["enable_checkpointing"] is False


def test_a_bool_hyperparameter_beside_its_negation_gets_a_prefixed_flag(run_cli, tmp_path):
    """``bias`` makes ``--bias``/``--no-bias``; ``no_bias`` would make ``--no-bias`` too, so it
    is ``--hparams.no-bias``, and every command (``hparams`` and ``--help`` as well) works."""
    target = tmp_path / "negations.py"
    target.write_text(
        "import torch\n"
        "import lightkit as lk\n\n\n"
        "@lk.model\n"
        "def net(bias: bool = True, no_bias: bool = False):\n"
        "    return torch.nn.Linear(1, 1, bias=bias and not no_bias)\n"
    )
    config = print_config(run_cli, str(target), "--no-bias", "--hparams.no-bias")
    assert config["hparams"] == {"bias": False, "no_bias": True}
    code, out, err = run_cli("hparams", str(target))
    assert code == 0, err
    assert [line.split()[:3] for line in out.splitlines()[2:]] == [
        ["bias", "bool", "True"],
        ["no_bias", "bool", "False"],
    ]


def test_underscore_spellings_of_flags_work(run_cli):
    config = print_config(run_cli, TINY, "--max_epochs", "2", "--batch_size=8")
    assert config["trainer"]["max_epochs"] == 2 and config["hparams"]["batch_size"] == 8


# -- bad targets -------------------------------------------------------------------------------


def test_missing_targets_exit_1_with_what_a_target_is(run_cli, nothing_runs):
    code, _, err = run_cli("fit", "tests.user_modules.no_such_module")
    assert code == 1
    assert "cannot import 'tests.user_modules.no_such_module': there is no module named" in err
    code, _, err = run_cli("fit", "tests/user_modules/no_such_file.py")
    assert code == 1
    assert "no such file: tests/user_modules/no_such_file.py. A TARGET is a .py file" in err
    code, _, err = run_cli("fit")
    assert code == 2
    assert "fit needs a TARGET" in err
    assert "Traceback" not in err


def test_a_target_with_a_syntax_error_exits_1_with_file_and_line(run_cli, tmp_path):
    bad = tmp_path / "broken_target.py"
    bad.write_text("import lightkit as lk\n\n\n@lk.model\ndef net(:\n    pass\n")
    code, _, err = run_cli("fit", str(bad))
    assert code == 1
    assert f"syntax error at {bad}:5: invalid syntax" in err
    assert "def net(:" in err and "Traceback" not in err
    code, _, err = run_cli("fit", str(bad), "--traceback")
    assert code == 1 and "Traceback" in err


def test_an_invalid_spec_exits_1_listing_every_problem(run_cli, nothing_runs):
    for command in ("spec", "fit"):
        code, out, err = run_cli(command, "tests.user_modules.bad_params")
        assert code == 1 and out == ""
        assert "invalid spec [invalid-spec]: 6 problems in tests/user_modules/bad_params.py" in err
        for problem in [
            "[unsupplied-loop-value] net(optimizer, hidden) at tests/user_modules/bad_params.py:4",
            "[unknown-parameter] train(net, batch, foo) at tests/user_modules/bad_params.py:9",
            "[variadic-parameter] optim(net, *params, lr, **kwargs)",
            "[positional-only-parameter] loader(batch_size, shuffle)",
            "[unsupplied-loop-value] announce(net, batch)",
        ]:
            assert problem in err
        assert "Traceback" not in err


# -- spec and hparams ----------------------------------------------------------------------------


def test_spec_prints_the_validated_spec_with_overrides_as_json(run_cli):
    code, out, _ = run_cli("spec", "tests.user_modules.split_models", "tests.user_modules.split_data", "--lr", "0.2")  # fmt: skip
    assert code == 0
    spec = json.loads(out)
    refs = {f["role"]: f["fn"] for f in spec["functions"]}
    assert refs["training_step"] == "tests.user_modules.split_models:train"
    assert refs["train_data"] == "tests.user_modules.split_data:train_loader"
    assert spec["hparams"] == {
        "hidden": 32, "label_smoothing": 0.0, "lr": 0.2, "batch_size": 16, "shuffle": True,
    }  # fmt: skip


def test_a_file_target_and_a_module_target_give_the_same_spec(run_cli):
    _, by_module, _ = run_cli("spec", TINY)
    _, by_path, _ = run_cli("spec", "tests/user_modules/cli_tiny.py")
    assert by_module == by_path


def test_hparams_prints_name_type_default_and_users(run_cli):
    code, out, _ = run_cli("hparams", TINY)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "type", "default", "used", "by"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == [
        "hidden", "activation", "init", "batch_size", "num_samples", "shuffle", "lr", "betas",
        "weight_decay", "tags",
    ]  # fmt: skip
    assert rows["batch_size"].split() == [
        "batch_size", "int", "4", "train_loader,", "val_loader,", "test_loader,", "predict_loader",
    ]  # fmt: skip
    assert "Literal['relu', 'tanh']" in rows["activation"]
    code, out, _ = run_cli("hparams", TINY, "--lr", "1e-3")
    lr_row = next(line for line in out.splitlines() if line.startswith("lr "))
    assert lr_row.split()[:5] == ["lr", "float", "0.05", "→", "0.001"]  # default, then given
    code, out, _ = run_cli("hparams", TINY, "--format", "json")
    lr = next(h for h in json.loads(out) if h["name"] == "lr")
    assert lr == {
        "name": "lr", "type": "float", "default": 0.05, "value": 0.05, "used_by": ["optim"],
        "description": "learning rate",
    }  # fmt: skip


def test_hparams_shows_a_path_default_as_typed(run_cli, tmp_path):
    # Not PosixPath('/data'): the table shows what a user types after the flag.
    module = tmp_path / "with_path.py"
    module.write_text(
        "from pathlib import Path\nimport lightkit as lk\n\n"
        "@lk.train_data\ndef data(root: Path = Path('/data'), split: str = 'train'):\n"
        "    return [root, split]\n"
    )
    code, out, _ = run_cli("hparams", module, "--root", "/elsewhere")
    assert code == 0, out
    rows = {line.split()[0]: line.split()[2:] for line in out.splitlines()[2:]}
    assert rows["root"] == ["'/data'", "→", "'/elsewhere'", "data"]
    assert rows["split"] == ["'train'", "data"]
    assert "PosixPath" not in out


# -- config files --------------------------------------------------------------------------------


def test_flags_override_the_config_file_which_overrides_defaults(run_cli, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        f'target = ["{TINY}"]\nckpt_path = "best"\n\n[hparams]\nlr = 0.2\nhidden = 8\n'
        'init = "zeros"\n\n[trainer]\nmax_epochs = 4\nseed = 1\nprecision = "64"\n'
    )
    config = print_config(run_cli, "--config", str(path), "--hidden", "32", "--seed", "none")
    assert config["target"] == [TINY] and config["ckpt_path"] == "best"
    assert config["hparams"]["lr"] == 0.2  # from the file
    assert config["hparams"]["init"] == "zeros"
    assert config["hparams"]["hidden"] == 32  # the flag wins
    assert config["hparams"]["batch_size"] == 4  # the default
    assert config["trainer"]["max_epochs"] == 4
    assert config["trainer"]["precision"] == "64-true"
    assert config["trainer"]["seed"] is None
    # The same in JSON, with flat keys; --print-config keeps the file's format.
    flat = tmp_path / "run.json"
    flat.write_text(json.dumps({"lr": 0.3, "max-epochs": 2}))
    code, out, _ = run_cli("fit", TINY, "--config", str(flat), "--print-config")
    assert code == 0
    data = json.loads(out)
    assert data["hparams"]["lr"] == 0.3 and data["trainer"]["max_epochs"] == 2


def test_a_yaml_config_file(run_cli, tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "run.yaml"
    path.write_text("hparams:\n  lr: 0.125\ntrainer:\n  accumulate_grad_batches: 3\n")
    config = print_config(run_cli, TINY, "--config", str(path))
    assert config["hparams"]["lr"] == 0.125
    assert config["trainer"]["accumulate_grad_batches"] == 3


def test_a_bad_hyperparameter_value_names_the_function_that_declares_it(
    run_cli, nothing_runs, tmp_path
):
    code, _, err = run_cli("fit", TINY, "--lr", "abc")
    assert code == 2
    assert re.search(
        r"Input should be a valid number.*\('lr' is declared by \w+\(.*lr.*\) at \S+\.py:\d+\)", err
    )
    path = tmp_path / "run.toml"
    path.write_text("[hparams]\nlr = 'fast'\n")
    code, _, err = run_cli("fit", TINY, "--config", str(path))
    assert code == 2 and "('lr' is declared by " in err
    code, _, err = run_cli("fit", TINY, "--max-epochs", "two")
    assert code == 2 and "declared by" not in err  # a trainer flag: the message is enough


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hparams]\nlr = 'fast'\n", "run.toml: [hparams] lr: expected float, got 'fast': Input should be a valid number"),
        ("[hparams]\nlrr = 1.0\n", "run.toml: unknown key 'lrr' in [hparams]. Did you mean 'lr'?"),
        ("[trainer]\nmax_epoch = 1\n", "unknown key 'max_epoch' in [trainer]. Did you mean 'max_epochs'?"),
        ("max_epochs = 'all'\n", "run.toml: [trainer] max_epochs: expected int | None, got 'all'"),
        ("[hparams\n", "run.toml is not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_config_file_exits_2_naming_the_file_and_key(
    run_cli, nothing_runs, tmp_path, text, message
):
    path = tmp_path / "run.toml"
    path.write_text(text)
    code, _, err = run_cli("fit", TINY, "--config", str(path))
    assert code == 2
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--precision", "bf17-mixed"], "unknown-precision"),
        (["--devices", "x"], "bad-devices"),
        (["--callbacks", "NoSuchCallback"], "bad-object-ref"),
        (["--config", "settings.ini"], "bad-config-file"),
    ],
)
def test_a_flag_error_with_a_code_ends_with_it(
    run_cli, nothing_runs, tmp_path, monkeypatch, args, code
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.ini").write_text("[x]\n")
    status, _, err = run_cli("fit", TINY, *args)
    assert status == 2
    assert err.rstrip().endswith(f"[{code}]")


def test_a_missing_config_file_exits_2(run_cli, nothing_runs, tmp_path):
    code, _, err = run_cli("fit", TINY, "--config", str(tmp_path / "none.toml"))
    assert code == 2
    assert "cannot read config file" in err and "none.toml" in err


def test_print_config_round_trips_through_toml(run_cli, tmp_path):
    args = [
        TINY, "--lr", "0.002", "--init", "zeros", "--betas", "0.5", "0.6", "--tags",
        "--check-val-every-n-epoch", "none", "--max-epochs", "3", "--gradient-clip-val", "0.25",
        "--callbacks", "EarlyStopping(monitor='val/loss', patience=3)", "--logger", "csv",
    ]  # fmt: skip
    code, first, err = run_cli("fit", *args, "--print-config")
    assert code == 0, err
    data = tomllib.loads(first)
    assert data["hparams"]["tags"] == [] and data["hparams"]["betas"] == [0.5, 0.6]
    assert data["trainer"]["check_val_every_n_epoch"] == "none"  # None against a default of 1
    assert "seed" not in data["trainer"]  # None, the default: a comment
    assert "# seed = none (the default)" in first
    path = tmp_path / "printed.toml"
    path.write_text(first)
    code, again, err = run_cli("fit", "--config", str(path), "--print-config")
    assert code == 0, err
    assert again == first


@pytest.mark.parametrize("form", ["toml", "json"])
def test_a_pydantic_model_hyperparameter_round_trips_through_print_config(run_cli, tmp_path, form):
    target = "tests.user_modules.nested_hparam"
    code, first, err = run_cli(
        "spec", target, "--opt", '{"lr": 0.5, "momentum": 0.9}', "--print-config", form
    )
    assert code == 0, err
    data = tomllib.loads(first) if form == "toml" else json.loads(first)
    assert data["hparams"]["opt"] == {"lr": 0.5, "momentum": 0.9}
    path = tmp_path / f"printed.{form}"
    path.write_text(first)
    code, out, err = run_cli("spec", "--config", str(path))
    assert code == 0, err
    assert json.loads(out)["hparams"]["opt"] == {"lr": 0.5, "momentum": 0.9}


def test_a_printed_file_target_is_absolute_and_runs_from_another_folder(
    run_cli, tmp_path, monkeypatch
):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    target = project / "tiny_copy.py"
    target.write_text(Path(TINY.replace(".", "/") + ".py").read_text())
    monkeypatch.chdir(project)
    code, printed, err = run_cli("fit", "tiny_copy.py", "--max-epochs", "1", "--print-config")
    assert code == 0, err
    assert tomllib.loads(printed)["target"] == [str(target)]
    (elsewhere / "c.toml").write_text(printed)
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli("spec", "--config", "c.toml")
    assert code == 0 and "tiny_copy" in out, err


def test_toml_writer_output_reads_back():
    data = {
        "target": ["a.b", 'quote"d'],
        "t": {
            "x": 1.5, "inf": float("inf"), "flag": True, "nested": {"k": [1, 2]},
            "list": [{"class_path": "m:C", "init_args": {"a": "b"}}], "gone": UNSET,
            "object": Unwritable("<object>"), "weird key": "\u00e9\n",
        },
    }  # fmt: skip
    text = to_toml(data, header="a header")
    assert text.startswith("# a header\n")
    assert "# gone = none (the default)" in text and "# object = <object>" in text
    back = tomllib.loads(text)
    expected = {k: v for k, v in data["t"].items() if k not in ("gone", "object")}
    assert back == {"target": data["target"], "t": expected}


def test_objects_are_written_with_the_arguments_that_rebuild_them():
    from lightkit.utils.config_file import object_ref
    from tests.user_modules.callback_kinds import Counting, Hidden

    where = "tests.user_modules.callback_kinds"
    # A plain subclass of an attrs class: its own __init__, read back by parameter name.
    assert object_ref(Counting(every=3)) == {
        "class_path": f"{where}:Counting", "init_args": {"every": 3}
    }  # fmt: skip
    assert object_ref(Counting()) == f"{where}:Counting"
    assert object_ref(lk.EarlyStopping(monitor="m", patience=9)) == {
        "class_path": "lightkit.callbacks.early_stopping:EarlyStopping",
        "init_args": {"monitor": "m", "patience": 9},
    }
    # An argument kept under another name is not silently dropped: the object is unwritable.
    assert isinstance(object_ref(Hidden(every=3)), Unwritable)


def test_the_cli_is_reachable_from_the_package():
    import lightkit as lk

    assert lk.cli.main is __import__("lightkit.cli").cli.main
    assert Path(lk.cli.__file__).parent.name == "cli"


def test_a_negative_number_in_e_notation_is_a_value(run_cli, tmp_path):
    # argparse alone reads `--shift -1e-3` as two flags.
    target = tmp_path / "shifted.py"
    target.write_text(
        "import lightkit as lk\n\n@lk.model\ndef net(shift: float = 0.0):\n    return shift\n"
    )
    code, out, err = run_cli("spec", str(target), "--shift", "-1e-3")
    assert code == 0, err
    assert json.loads(out)["hparams"]["shift"] == -0.001
