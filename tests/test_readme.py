"""The README's commands and every --help example: each parses as our CLI, and each model or
address is one that exists (checked by hand against public sources, listed here) or is plainly
a placeholder (a file under /srv or /media, a host under example.com). Nothing is downloaded."""
import re
import shlex

import pytest

from conftest import ROOT

import ramalama

# Checked against public sources: the Ollama library and the Hugging Face Hub.
REAL = {
    ("ollama", "registry.ollama.ai", "library/smollm", "135m"),      # SmolLM 135M, about 92 MB
    ("ollama", "registry.ollama.ai", "library/llama3.2", "1b"),      # 1.3 GB
    ("huggingface", "", "bartowski/SmolLM2-135M-Instruct-GGUF", None),
    ("huggingface", "", "HuggingFaceTB/SmolLM2-135M-Instruct", None),
    ("huggingface", "", "bartowski/Llama-3.2-1B-Instruct-GGUF", None),   # llama3.2:1b, a built-in shortname
}
REAL_REGISTRIES = {"quay.io", "docker.io"}
PROGRAMS = ("ramalama", "./dist/ramalama.pyz", "./ramalama.pyz", "/media/usb/ramalama.pyz")


def readme_commands() -> list:
    """Every command line of ours in the README's shell blocks (comments and redirections cut)."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                words = shlex.split(part.split("<")[0].split(">")[0])
                if words and words[0] in PROGRAMS:
                    lines.append(words[1:])
    return lines


def help_commands() -> list:
    examples = [e for c in ramalama.COMMANDS for e in c.examples]
    examples += [line.strip() for line in ramalama.EPILOG.splitlines()
                 if line.strip().startswith("ramalama ")]
    commands = [e.split("|")[-1].split("<")[0].split(">")[0] for e in examples if "completion" not in e]
    return [shlex.split(c)[1:] for c in commands]


def models_named(argv: list) -> list:
    args = ramalama.parse_args(argv)
    names = []
    for attr in ("MODEL", "SOURCE", "TARGET"):
        value = getattr(args, attr, None)
        names += value if isinstance(value, list) else [value] if value else []
    return names


def acceptable(text: str) -> bool:
    ref = ramalama.parse_ref(text, ramalama.load_config({"HOME": "/nonexistent"}, system_dirs=()).shortnames)
    if ref.transport in ("file", "oci-layout", "oci-archive"):
        return ref.name.startswith(("/srv/", "/media/"))
    host = ref.host.split(":")[0]
    if host == "example.com" or host.endswith(".example.com"):
        return True
    if ref.transport == "oci":
        return host in REAL_REGISTRIES and not ref.name.startswith("me/")
    tag = ref.tag if ref.transport == "ollama" else None
    return (ref.transport, ref.host, ref.name, tag) in REAL


def test_the_first_command_pulls_a_real_model_through_the_default_transport():
    first = (ROOT / "README.md").read_text().split("```sh\n", 1)[1].splitlines()[0]
    build, run = [shlex.split(p.split("#")[0]) for p in first.split("&&")]
    assert build == ["./build.sh"] and run[0] == "./dist/ramalama.pyz"
    args = ramalama.parse_args(run[1:])
    assert args.command == "pull"
    ref = ramalama.parse_ref(args.MODEL[0])
    assert ref.transport == ramalama.DEFAULT_TRANSPORT == "ollama"
    assert (ref.host, ref.name, ref.tag) == ("registry.ollama.ai", "library/smollm", "135m")
    assert "about 92 MB" in first


@pytest.mark.parametrize("source", ["readme", "help"])
def test_every_example_parses_and_names_something_real_or_a_placeholder(source):
    commands = readme_commands() if source == "readme" else help_commands()
    assert len(commands) > 10
    bad = []
    for argv in commands:
        for name in models_named(argv):
            if not acceptable(name):
                bad.append((argv, name))
    assert bad == []
