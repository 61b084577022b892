"""The command line: help, exit codes, one-line errors, list/info/version output, progress."""
import io
import json
import os

import pytest

from conftest import blobs

import ramalama

COMMANDS = ["pull", "push", "run", "serve", "list", "ls", "rm", "inspect", "info", "login", "logout",
            "version", "containers", "ps", "stop", "fsck", "prune"]


def test_help_lists_every_command(cli):
    r = cli("--help")
    assert r.code == 0
    for name in COMMANDS:
        assert name in r.out
    assert "examples:" in r.out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(cli, name):
    r = cli(name, "--help")
    assert r.code == 0 and r.out.startswith("usage: ramalama "
                                            + {"ls": "list", "ps": "containers"}.get(name, name))


@pytest.mark.parametrize("argv, fragment", [
    ([], "no command given"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["list", "--bogus"], "unrecognized arguments: --bogus"),
    (["run", "--ctx-size", "big", "m"], "argument --ctx-size/-c: invalid int value: 'big'"),
    (["pull", "--tls-verify=maybe", "x"], "expected true or false, not 'maybe'"),
    (["pull", "bogus://x"], "unknown transport 'bogus://'"),
    (["pull", "ollama://a/b/c/d"], "invalid ollama model"),
    (["inspect", "ollama://missing"], "ollama://missing:latest is not in the store"),
])
def test_user_mistakes_are_one_error_line(cli, argv, fragment):
    r = cli(*argv)
    assert r.code in (1, 2) and r.out == ""
    errors = [line for line in r.err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and fragment in errors[0], r.err
    assert "Traceback" not in r.err


def test_unreachable_hub_is_one_line(cli):
    r = cli("pull", "hf://org/repo", env_extra={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert r.code == 1 and r.err.count("\n") == 1
    assert r.err.startswith("Error: http://127.0.0.1:9/api/models/org/repo/revision/main: ")


def test_global_flags_work_after_the_command(cli, tmp_path, model_file):
    other = tmp_path / "other-store"
    r = cli("pull", "--quiet", "--store", other, "file://%s" % model_file)
    assert r.code == 0 and r.err == ""
    assert os.listdir(other / "blobs" / "sha256")
    assert "global flags:" in cli("pull", "--help").out


def test_version(cli):
    assert cli("version").out == "ramalama version %s\n" % ramalama.__version__
    assert cli("-v").out == cli("--version").out == cli("version").out


def test_list_outputs(cli, tmp_path, tiny_gguf):
    for name in ("b.gguf", "a.gguf"):
        p = tmp_path / name
        p.write_bytes(tiny_gguf.read_bytes() + name.encode())     # two distinct blobs
        assert cli("pull", "file://%s" % p).code == 0
    table = cli("list").out.splitlines()
    assert table[0].split() == ["NAME", "MODIFIED", "SIZE"]
    assert [line.split()[0] for line in table[1:]] == ["file://%s/a.gguf" % tmp_path, "file://%s/b.gguf"
                                                       % tmp_path]
    assert table[1].split()[1:3] == ["Just", "now"]
    assert len(cli("list", "-n").out.splitlines()) == 2
    rows = json.loads(cli("ls", "--json").out)
    keys = ["damaged", "modified", "name", "path", "shortname", "size", "store"]
    assert [sorted(r) for r in rows] == [keys] * 2
    assert rows[0]["size"] == tiny_gguf.stat().st_size + 6
    by_age = json.loads(cli("list", "--json", "--sort", "modified").out)
    assert by_age[0]["name"].endswith("a.gguf")


def test_list_on_an_empty_store(cli, store):
    assert cli("list").out.split() == ["NAME", "MODIFIED", "SIZE"]
    assert json.loads(cli("list", "--json").out) == []
    assert not store.exists()                  # reading never creates the store


def test_info_is_json(cli, store, model_file, env):
    assert cli("pull", "file://%s" % model_file).code == 0
    info = json.loads(cli("info").out)
    assert info["version"] == ramalama.__version__
    assert info["store"]["path"] == str(store)
    assert info["store"]["models"] == 1 and info["store"]["blobs"] == 1
    assert info["store"]["blob_bytes"] == model_file.stat().st_size
    assert info["config"]["files"] == []
    assert info["image"] == "quay.io/ramalama/ramalama:latest" and info["transport"] == "ollama"
    info = json.loads(cli("--image", "x/y:1", "info", env_extra={"RAMALAMA_TRANSPORT": "oci"}).out)
    assert info["image"] == "x/y:1" and info["transport"] == "oci"


def test_store_from_env_and_dryrun(env, tmp_path, model_file):
    out, err = io.StringIO(), io.StringIO()
    store = tmp_path / "envstore"
    code = ramalama.main(["--dryrun", "pull", "file://%s" % model_file],
                         env=dict(env, RAMALAMA_STORE=str(store)), stdout=out, stderr=err)
    assert code == 0 and out.getvalue().startswith("would pull file://%s into %s/repos/file/"
                                                   % (model_file, store))
    assert not store.exists()


def test_progress_lines_and_quiet(cli, model_file, tmp_path):
    r = cli("pull", "file://%s" % model_file)
    size = ramalama.human_size(model_file.stat().st_size)
    assert r.err.splitlines()[0].startswith("tiny.gguf: %s in " % size)
    assert r.err.splitlines()[-1] == "Pulled file://%s (%s)" % (model_file, size)
    assert cli("-q", "pull", "file://%s" % model_file).err == ""


def test_progress_bars_on_a_tty():
    class TTY(io.StringIO):
        def isatty(self):
            return True
    now = [0.0]
    stream = TTY()
    board = ramalama.ProgressBoard(stream, "bar", clock=lambda: now[0])
    a, b = board.progress(), board.progress()
    a.start("model.gguf", 4 << 20)
    b.start("mmproj.gguf", 1 << 20)
    for i in range(1, 5):
        now[0] += 1.0
        a.update(i << 20)
        b.update(min(i, 1) << 20)
    b.finish(True)
    a.finish(True)
    screen = []                                    # replay the cursor moves: what the terminal shows
    for chunk in stream.getvalue().split("\x1b["):
        if chunk[:1].isdigit() and "A" in chunk[:4]:
            up, chunk = chunk.split("A", 1)
            del screen[len(screen) - int(up):]
        for line in chunk.split("\n")[:-1]:
            screen.append(line.replace("\r", "").replace("K", "", 1) if line.startswith(("\rK", "K"))
                          else line)
    assert len(screen) == 2
    assert screen[0].startswith("mmproj.gguf")
    assert "100% [########################] 1.0 MiB/1.0 MiB" in screen[0]
    assert screen[1].startswith("model.gguf")
    assert "100% [########################] 4.0 MiB/4.0 MiB 1.0 MiB/s" in screen[1]


def test_pull_many_continues_after_a_failure(cli, store, model_file):
    r = cli("pull", "file:///nonexistent/x.gguf", "file://%s" % model_file)
    assert r.code == 1 and "Error: /nonexistent/x.gguf: no such file" in r.err
    assert len(blobs(store)) == 1


def test_debug_logs_requests_without_secrets(cli, store):
    from servers import FileServer
    with FileServer() as srv:
        srv.add("/m.gguf", b"GGUF" + b"\0" * 100)
        r = cli("--debug", "pull", srv.url + "/m.gguf?token=s3cr3t")
    assert r.code == 0 and "debug: GET %s/m.gguf" % srv.url in r.err
    assert "s3cr3t" not in r.err.replace("m.gguf?token=s3cr3t (", "")  # only the model name shows it
