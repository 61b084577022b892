"""The commands around a running model, for real: chat and models against our servers (native and
in podman, with and without an API key), llama-bench and llama-perplexity on a generated GGUF,
and several models served at once by llama-server's router."""
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, write_tiny_llama
from serving import free_port, leftovers, llama_processes, podman, post_json, ramalama, start_serving


def cli_run(store, *argv, env, stdin=None, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)] + list(argv),
                          capture_output=True, text=True, env=env, input=stdin, timeout=timeout)


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture
def second_model(cli, tmp_path):
    """Another generated GGUF (other weights, other name) pulled into the same store."""
    path = tmp_path / "models" / "other.gguf"
    path.parent.mkdir(exist_ok=True)
    write_tiny_llama(str(path), seed=7, name="other")
    assert cli("pull", "file://%s" % path).code == 0
    return "file://%s" % path


# -- chat and models

@pytest.mark.parametrize("keyed", [False, True], ids=["open", "api-key"])
def test_chat_and_models_against_serve(store, model, engine, keyed):
    """`serve` natively or `serve -d` in podman; `chat` finds the container (or takes --url),
    answers a prompt and a prompt on stdin; `models` lists the one model; a key is needed
    exactly when the server was given one."""
    flags, run_env = engine
    key = "k3y-%d" % time.time_ns()
    served_env = dict(run_env, RAMALAMA_API_KEY=key) if keyed else run_env
    in_podman = "--nocontainer" not in flags
    port = free_port()
    proc = None
    if in_podman:
        r = cli_run(store, *flags, "serve", "-d", "--name", "chat-target", "--port", str(port), model,
                    env=served_env)
        assert r.returncode == 0 and r.stdout.strip() == "chat-target", r.stderr
        where, url = ["--engine", "podman"], []          # found as the one model container serving
    else:
        proc, port = start_serving(store, model, flags, served_env, "--temp", "0", port=port)
        where, url = [], ["--url", "http://127.0.0.1:%d/v1" % port]
    try:
        r = cli_run(store, *where, "chat", *url, "--temp", "0", "--max-tokens", "8", "hello there",
                    env=served_env)
        assert r.returncode == 0 and r.stdout.endswith("\n") and "Traceback" not in r.stderr, r.stderr
        r = cli_run(store, *where, "chat", *url, "--max-tokens", "8", env=served_env,
                    stdin="a prompt on stdin\n")
        assert r.returncode == 0, r.stderr
        r = cli_run(store, *where, "models", *url, "--json", env=served_env)
        assert r.returncode == 0 and json.loads(r.stdout) == [model], r.stderr
        r = cli_run(store, *where, "models", *url, env=served_env)
        assert r.stdout.splitlines()[0].split() == ["MODEL", "OWNED", "BY"] and model in r.stdout
        if keyed:
            r = cli_run(store, *where, "chat", *url, "hello", env=run_env)        # no key
            assert r.returncode == 1 and "HTTP 401" in one_error_line(r) and "--api-key" in r.stderr
            r = cli_run(store, *where, "chat", *url, "--api-key", "wrong", "hello", env=run_env)
            assert r.returncode == 1 and "refused the API key" in one_error_line(r)
            assert key not in r.stderr
    finally:
        if in_podman:
            assert cli_run(store, *flags, "stop", "chat-target", env=run_env).returncode == 0
        else:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    assert leftovers(store, run_env) == []


def test_chat_without_a_server_is_one_line(store, env):
    port = free_port()                              # nothing listens there
    r = cli_run(store, "chat", "--url", "http://127.0.0.1:%d/v1" % port, "hi", env=env)
    assert r.returncode == 1
    assert one_error_line(r) == ("Error: no model server answers at http://127.0.0.1:%d/v1 (Connection "
                                 "refused); start one with `ramalama serve -d MODEL`, or pass --url" % port)
    # through a proxy that is down, the line names the proxy, not the server behind it
    r = cli_run(store, "chat", "--url", "http://models.example.com/v1", "hi",
                env=dict(env, HTTP_PROXY="http://127.0.0.1:%d" % port))
    assert r.returncode == 1
    assert one_error_line(r) == ("Error: cannot reach proxy http://127.0.0.1:%d (from HTTP_PROXY): "
                                 "Connection refused" % port)
    r = cli_run(store, "models", "--url", "ftp://example.com", env=env)
    assert r.returncode == 2 and "not an http(s) URL" in one_error_line(r)


# -- llama.cpp's tools

def test_bench_prints_llama_bench_results(store, model, engine):
    flags, run_env = engine
    r = cli_run(store, *flags, "bench", "--runtime-args", "-p 32 -n 8 -r 2", model, env=run_env)
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0]
    assert header.startswith("| model") and "t/s" in header
    assert "pp32" in r.stdout and "tg8" in r.stdout
    r = cli_run(store, *flags, "benchmark", "--format", "json", "--runtime-args", "-p 32 -n 8 -r 2", model,
                env=run_env)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert {(x["n_prompt"], x["n_gen"]) for x in results} == {(32, 0), (0, 8)}
    assert all(x["avg_ts"] > 0 and x["model_filename"].endswith("tiny.gguf") for x in results)
    if "--nocontainer" not in flags:                # the model was mounted, read-only, where run mounts it
        assert {x["model_filename"] for x in results} == {"/mnt/models/tiny.gguf"}
    assert leftovers(store, run_env) == []


def test_perplexity_scores_a_text_or_says_why_not(store, model, engine, tmp_path):
    flags, run_env = engine
    text = tmp_path / "sample.txt"
    text.write_text(" ".join(["the quick brown fox jumps over the lazy dog"] * 150))
    by_file = cli_run(store, *flags, "perplexity", "--ctx-size", "128", "--file", str(text), model,
                      env=run_env)
    by_stdin = cli_run(store, *flags, "perplexity", "--ctx-size", "128", model, env=run_env,
                       stdin=text.read_text())
    for r in (by_file, by_stdin):
        assert r.returncode == 0, r.stderr
        assert re.search(r"^\[1\]\d+\.\d+,\[2\]\d+\.\d+,", r.stdout,
                         re.M), r.stdout      # per-chunk perplexity
        # llama.cpp's log thread can lose a tool's last lines at exit (its issue 22142): then the
        # running estimate is pointed at instead
        assert ("Final estimate: PPL = " in r.stderr) != ("closing lines were lost" in r.stderr), r.stderr
    r = cli_run(store, *flags, "perplexity", model, env=run_env, stdin="far too short")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("Error: llama-perplexity "
                                                                              "computed nothing")
    r = cli_run(store, *flags, "perplexity", "--file", str(tmp_path / "missing.txt"), model, env=run_env)
    assert r.returncode == 2 and "no such file" in one_error_line(r)
    assert leftovers(store, run_env) == []


def test_a_stopped_bench_leaves_nothing_running(store, model, engine):
    flags, run_env = engine
    proc = ramalama(store, *flags, "bench", "--runtime-args", "-p 512 -n 128 -r 100000", model, env=run_env)
    deadline = time.time() + 120
    while time.time() < deadline and not running_bench(run_env):
        time.sleep(0.2)
    assert running_bench(run_env), proc.stderr.read() if proc.poll() is not None else "no bench started"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert not running_bench(run_env) and leftovers(store, run_env) == []


def running_bench(run_env) -> bool:
    procs = subprocess.run(["pgrep", "-f", "llama-bench"], capture_output=True, text=True).stdout.split()
    if "CONTAINERS_CONF" in run_env:
        return bool(podman(run_env, "ps", "--filter", "label=ai.ramalama", "--format",
                           "{{.Names}}").stdout.split())
    return bool(procs)


# -- several models at once

def test_serve_two_models_by_name(store, model, second_model, engine):
    flags, run_env = engine
    proc, port = start_serving(store, model, flags, run_env, "--temp", "0", second_model)
    try:
        url = ["--url", "http://127.0.0.1:%d/v1" % port]
        r = cli_run(store, "models", *url, "--json", env=run_env)
        assert r.returncode == 0 and sorted(json.loads(r.stdout)) == ["other", "tiny"], r.stderr
        for name in ("tiny", "other"):
            r = cli_run(store, "chat", *url, "--model", name, "--max-tokens", "4", "hello", env=run_env)
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        r = cli_run(store, "chat", *url, "hello", env=run_env)
        assert r.returncode == 2 and "choose one with --model" in one_error_line(r)
        r = cli_run(store, "chat", *url, "--model", "nope", "hello", env=run_env)
        assert r.returncode == 1 and "model 'nope' not found" in one_error_line(r)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert leftovers(store, run_env) == [] and llama_processes("ramalama-models-") == []


def test_serve_without_a_model_serves_the_whole_store(store, model, second_model, path_env):
    proc, port = start_serving(store, None, ["--nocontainer"], path_env)
    try:
        r = cli_run(store, "models", "--url", "http://127.0.0.1:%d" % port, "--json", env=path_env)
        assert sorted(json.loads(r.stdout)) == ["other", "tiny"], r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert llama_processes("ramalama-models-") == []


def test_serve_without_a_model_on_an_empty_store(store, env):
    r = cli_run(store, "--nocontainer", "serve", env=env)
    assert r.returncode == 1 and "no GGUF model in the store" in one_error_line(r)


def test_tools_and_the_router_are_llama_cpp_only(store, model, second_model, env):
    r = cli_run(store, "--runtime", "vllm", "bench", model, env=env)
    assert r.returncode == 2 and "vllm bench" in one_error_line(r)
    r = cli_run(store, "--runtime", "vllm", "--nocontainer", "serve", model, second_model, env=env)
    assert r.returncode == 2 and "vLLM serves one model" in one_error_line(r)


def test_bench_needs_the_tool_natively(store, model, env, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    r = cli_run(store, "--nocontainer", "bench", model, env=dict(env, PATH=str(bindir)))
    assert r.returncode == 1 and "llama-bench is not installed" in one_error_line(r)
    assert shutil.which("llama-bench", path=str(bindir)) is None


# -- generated deployment files, run unedited

def test_generated_kube_runs_under_podman_kube_play(store, model, env, podman_image, tmp_path):
    tag, penv = podman_image
    run_env = dict(env, **penv)
    port = free_port()
    kube = generated(store, tag, run_env, "kube", "tiny-kube", port, model, tmp_path) / "tiny-kube.yaml"
    try:
        r = subprocess.run(["podman", "kube", "play", str(kube)], capture_output=True, text=True, env=run_env,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        wait_healthy(port)
        answer = post_json(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                          "max_tokens": 8})
        assert answer["choices"][0]["message"]["role"] == "assistant"
        names = podman(run_env, "ps", "--format", "{{.Names}}").stdout.split()
        server = json.loads(podman(run_env, "inspect",
                                   [n for n in names if "model-server" in n][0]).stdout)[0]
        infra = json.loads(podman(run_env, "inspect",
                                  [n for n in names if n.endswith("-infra")][0]).stdout)[0]
        assert infra["HostConfig"]["PortBindings"] == {"%d/tcp" % port: [{"HostIp": "127.0.0.1",
                                                                          "HostPort": str(port)}]}
        assert server["ImageName"].split("@")[1] == pinned(store, tag)             # by digest
        assert "no-new-privileges" in server["HostConfig"]["SecurityOpt"]
        assert [(m["Destination"], m["RW"]) for m in server["Mounts"]] == [("/mnt/models/tiny.gguf", False)]
    finally:
        subprocess.run(["podman", "kube", "down", str(kube)], capture_output=True, env=run_env, timeout=120)
    assert leftovers(store, run_env) == []


def generated(store, tag: str, run_env: dict, kind: str, name: str, port: int, model: str, tmp_path):
    """The folder `serve --generate KIND` wrote its files into, for the test image."""
    out = tmp_path / "deploy"
    r = cli_run(store, "--engine", "podman", "--image", tag, "serve", "--generate", "%s:%s" % (kind, out),
                "--name", name, "--port", str(port), model, env=run_env)
    assert r.returncode == 0, r.stderr
    return out


def pinned(store, tag: str) -> str:
    return json.loads((store / "images.json").read_text())[tag]["digest"]


def wait_healthy(port: int, timeout: float = 120) -> None:
    import urllib.error
    import urllib.request
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        assert time.time() < deadline, "nothing healthy on port %d" % port
        time.sleep(0.5)


def test_generated_compose_runs_under_podman_compose(store, model, env, podman_image, tmp_path):
    import shutil
    from conftest import require
    require("podman-compose (apt-get install podman-compose)", shutil.which("podman-compose"))
    tag, penv = podman_image
    run_env = dict(env, **penv)
    port = free_port()
    out = generated(store, tag, run_env, "compose", "tiny-compose", port, model, tmp_path)
    compose = ["podman-compose", "-p", "tiny", "-f", str(out / "compose.yaml")]
    try:
        r = subprocess.run(compose + ["up", "-d"], capture_output=True, text=True, env=run_env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_healthy(port)
        answer = post_json(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                          "max_tokens": 8})
        assert answer["choices"][0]["message"]["role"] == "assistant"
        names = podman(run_env, "ps", "--filter", "label=ai.ramalama", "--format",
                       "{{.Names}}").stdout.split()
        server = json.loads(podman(run_env, "inspect", names[0]).stdout)[0]
        assert server["HostConfig"]["PortBindings"] == {"%d/tcp" % port: [{"HostIp": "127.0.0.1",
                                                                           "HostPort": str(port)}]}
        assert server["ImageName"].split("@")[1] == pinned(store, tag)
        assert server["HostConfig"]["CapDrop"] and "no-new-privileges" in server["HostConfig"]["SecurityOpt"]
        assert [(m["Destination"], m["RW"]) for m in server["Mounts"]] == [("/mnt/models/tiny.gguf", False)]
    finally:
        subprocess.run(compose + ["down"], capture_output=True, env=run_env, timeout=120)
    assert leftovers(store, run_env) == []


def test_generated_quadlet_is_accepted_by_podmans_generator(cli, store, model, tmp_path):
    import glob
    from test_launch import pin
    generator = next(iter(glob.glob("/usr/libexec/podman/quadlet") + glob.glob("/usr/lib/podman/quadlet")),
                     None)
    if generator is None:
        pytest.skip("this podman has no quadlet generator (podman 4.4 and later have one)")
    pin(store, "quay.io/ramalama/ramalama:latest")
    units = tmp_path / "containers" / "systemd"
    r = cli("--engine", "podman", "serve", "--generate", "quadlet:%s" % units, "--name", "tiny", model,
            env_extra={"RAMALAMA_GPU": "none"})
    assert r.code == 0, r
    out = tmp_path / "generated"
    out.mkdir()
    r = subprocess.run([generator, "-v", str(out)], capture_output=True, text=True,
                       env={"QUADLET_UNIT_DIRS": str(units), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    service = (out / "tiny.service").read_text()
    assert "quay.io/ramalama/ramalama@sha256:" in service and "--cap-drop=all" in service
