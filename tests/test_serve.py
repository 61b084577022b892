"""serve and run for real: llama-server built from source natively, the same inside podman
(and through the docker CLI against podman's socket), and vLLM's API shape from a stand-in."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, require
from runtime import have, install_fake_vllm
from serving import (chat_completion, free_port, http_status, leftovers, llama_processes, podman, ramalama,
                     start_serving)


def test_serve_nocontainer_answers_and_stops(store, model, path_env):
    port = free_port()
    proc = ramalama(store, "--nocontainer", "serve", "--port", str(port), "--host", "127.0.0.1", model,
                    env=path_env)
    try:
        announced = proc.stderr.readline()          # printed once the endpoint is healthy
        assert announced.startswith("Serving %s at http://127.0.0.1:%d/v1" % (model, port)), announced
        answer = chat_completion(port, model)
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert llama_processes(str(store))
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err
    assert llama_processes(str(store)) == []


def test_run_nocontainer_answers_once_and_cleans_up(store, model, path_env):
    before = {p for p in os.listdir("/tmp") if p.startswith("ramalama-")}
    # greedy decoding of the generated weights: deterministic, and not empty for this prompt
    proc = ramalama(store, "--nocontainer", "run", "--temp", "0", "--seed", "1", model, "hello there",
                    env=path_env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(out.strip()) > 0
    assert llama_processes(str(store)) == []
    proc = ramalama(store, "--nocontainer", "run", model, env=path_env, stdin=subprocess.PIPE)
    out, err = proc.communicate("a prompt on stdin\n", timeout=120)
    assert proc.returncode == 0 and out.endswith("\n"), err      # the reply itself may be empty
    assert llama_processes(str(store)) == []
    assert {p for p in os.listdir("/tmp") if p.startswith("ramalama-")} == before   # socket dirs removed


def test_run_pulls_a_missing_model_first(store, model_file, path_env):
    proc = ramalama(store, "--nocontainer", "run", "file://%s" % model_file, "hi", env=path_env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "not in the store; pulling it" in err, err


def test_missing_runtime_is_one_line(store, model, env):
    proc = ramalama(store, "--nocontainer", "run", model, "hi", env=dict(env, PATH="/usr/bin:/bin"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == ("Error: llama-server is not installed (not on PATH); install it, "
                                            "or run in a container with podman or docker")


def test_vllm_runtime_against_its_api_shape(store, model, env, tmp_path):
    install_fake_vllm(tmp_path / "bin")
    log = tmp_path / "vllm.log"
    run_env = dict(env, PATH="%s:%s" % (tmp_path / "bin", env["PATH"]), FAKE_VLLM_LOG=str(log))
    proc = ramalama(store, "--nocontainer", "--runtime", "vllm", "run", "--ctx-size", "2048", model,
                    "tell me",
                    env=run_env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "vllm says: tell me"
    argv = json.loads(log.read_text().splitlines()[0])
    assert argv[1:3] == ["serve", "%s/repos/file%s/tiny.gguf" % (store, model[len("file://"):])]
    assert argv[argv.index("--max-model-len") + 1] == "2048"


def test_vllm_gets_the_api_key_by_environment(store, model, env, tmp_path):
    install_fake_vllm(tmp_path / "bin")
    log = tmp_path / "vllm.log"
    key = "vllm-k3y-%d" % os.getpid()
    run_env = dict(env, PATH="%s:%s" % (tmp_path / "bin", env["PATH"]), FAKE_VLLM_LOG=str(log),
                   RAMALAMA_API_KEY=key, VLLM_API_KEY="not-passed-on")
    proc = ramalama(store, "--nocontainer", "--runtime", "vllm", "run", model, "tell me", env=run_env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "vllm says: tell me", err   # the fake checked the key
    assert key not in log.read_text().splitlines()[0]                         # not in its argv


# -- containers

def test_serve_in_podman_pinned_by_digest(store, model, env, podman_image):
    tag, penv = podman_image
    run_env = dict(env, **penv)
    port = free_port()
    proc = ramalama(store, "--engine", "podman", "--image", tag, "--debug", "serve", "-d", "--name",
                    "tiny-served",
                    "--port", str(port), model, env=run_env)
    out, err = proc.communicate(timeout=300)
    try:
        assert proc.returncode == 0, err
        assert out.strip() == "tiny-served"
        pinned = json.loads((store / "images.json").read_text())[tag]["digest"]
        assert "image %s@%s" % (tag.rsplit(":", 1)[0], pinned) in err
        inspect = json.loads(podman(penv, "inspect", "tiny-served").stdout)[0]
        assert inspect["ImageName"] == "%s@%s" % (tag.rsplit(":", 1)[0], pinned)
        assert chat_completion(port, model)["choices"]
        r = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store), "--engine",
                            "podman",
                            "ps", "--json"], capture_output=True, text=True, env=run_env)
        rows = json.loads(r.stdout)
        assert [(c["name"], c["model"]) for c in rows] == [("tiny-served", model)]
        assert rows[0]["url"] == "http://127.0.0.1:%d/v1" % port
        mounts = inspect["Mounts"]
        assert [m["Destination"] for m in mounts
                if m["Destination"].startswith("/mnt/models")] == ["/mnt/models/tiny.gguf"]
        assert all(not m["RW"] for m in mounts if m["Destination"].startswith("/mnt/models"))
        assert inspect["HostConfig"]["CapDrop"]
        assert "no-new-privileges" in json.dumps(inspect["HostConfig"]["SecurityOpt"])
    finally:
        r = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store), "--engine",
                            "podman",
                            "stop", "tiny-served"], capture_output=True, text=True, env=run_env)
    assert r.returncode == 0 and r.stdout.strip() == "tiny-served", r.stderr
    assert "tiny-served" not in podman(penv, "ps", "--format", "{{.Names}}").stdout


def test_run_in_podman_without_network(store, model, env, podman_image):
    tag, penv = podman_image
    run_env = dict(env, **penv)
    proc = ramalama(store, "--engine", "podman", "--image", tag, "run", "--name", "tiny-run", "--temp", "0",
                    "--seed", "1", model, "hello there", env=run_env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.strip()
    assert "tiny-run" not in podman(penv, "ps", "-a", "--format", "{{.Names}}").stdout   # stopped and removed


def test_docker_cli_against_podman_socket(store, model, env, podman_image, tmp_path):
    tag, penv = podman_image
    require("docker CLI", have("docker"))
    sock = tmp_path / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", "unix://%s" % sock],
                               env=dict(os.environ, **penv), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        run_env = dict(env, DOCKER_HOST="unix://%s" % sock, **penv)
        proc = ramalama(store, "--engine", "docker", "--image", tag, "run", "--temp", "0", "--seed", "1",
                        model,
                        "hello there", env=run_env)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.strip()
    finally:
        service.terminate()
        service.wait(10)


def test_docker_without_a_daemon_falls_back_to_native(store, model, path_env):
    require("docker CLI", have("docker"))
    digest = "sha256:" + "cd" * 32
    run_env = dict(path_env, DOCKER_HOST="unix:///nonexistent/docker.sock")
    proc = ramalama(store, "--engine", "docker", "--image", "quay.io/x/y@" + digest, "run", model, "hi",
                    env=run_env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and "running natively instead" in warnings[0]


def pty_chat(argv: list, env: dict, lines: list) -> tuple:
    """Run argv on a pseudo-terminal: wait for each '> ' prompt, type the next line.
    Returns (exit status, everything the terminal showed)."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, env)
    seen = b""

    def read_until(marker: bytes, timeout=60):
        nonlocal seen
        start, deadline = len(seen), time.time() + timeout
        while marker not in seen[start:]:
            assert time.time() < deadline, seen
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    return
    try:
        for line in lines:
            read_until(b"> ")
            os.write(fd, line.encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        read_until(b"", timeout=1)
    finally:
        os.close(fd)
    return status, seen.decode("utf-8", "replace")


def test_interactive_run_on_a_terminal(store, model, path_env):
    """A real pseudo-terminal: prompt, two turns, /bye, the server gone."""
    argv = [sys.executable, str(ROOT / "ramalama.py"), "--store", str(store), "--nocontainer", "run",
            "--temp", "0",
            model]
    status, _screen = pty_chat(argv, path_env, ["hello there", "and again", "/bye"])
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert llama_processes(str(store)) == []


def test_interactive_chat_keeps_history(store, model, env, tmp_path):
    install_fake_vllm(tmp_path / "bin")
    log = tmp_path / "vllm.log"
    run_env = dict(env, PATH="%s:%s" % (tmp_path / "bin", env["PATH"]), FAKE_VLLM_LOG=str(log))
    argv = [sys.executable, str(ROOT / "ramalama.py"), "--store", str(store), "--nocontainer", "--runtime",
            "vllm",
            "run", model]
    status, screen = pty_chat(argv, run_env, ["first question", "second one", "/bye"])
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert "vllm says: first question" in screen and "vllm says: second one" in screen
    requests = [json.loads(line)["messages"] for line in log.read_text().splitlines() if '"messages"' in line]
    assert [[m["role"] for m in msgs] for msgs in requests] == [["user"], ["user", "assistant", "user"]]
    assert requests[1][1]["content"].strip() == "vllm says: first question"


def test_export_with_the_runtime_image_runs_where_no_registry_answers(store, model, env, podman_image,
                                                                      tmp_path):
    tag, penv = podman_image
    run_env = dict(env, **penv)
    usb = tmp_path / "usb" / "tiny.tar"
    r = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store), "--engine",
                        "podman",
                        "--image", tag, "export", "--image", model, str(usb)], capture_output=True, text=True,
                       env=run_env)
    assert r.returncode == 0, r.stderr
    assert podman(penv, "rmi", "-f", tag).returncode == 0             # the image leaves this host
    # the "offline host": registries blocked, its own store
    blocked = tmp_path / "blocked.conf"
    blocked.write_text('[[registry]]\nlocation = "%s"\nblocked = true\n' % tag.split("/")[0])
    offline_env = dict(run_env, CONTAINERS_REGISTRIES_CONF=str(blocked))
    other = tmp_path / "offline-store"
    base = [sys.executable, str(ROOT / "ramalama.py"), "--store", str(other), "--engine", "podman",
            "--image", tag]
    r = subprocess.run(base + ["import", str(usb)], capture_output=True, text=True, env=offline_env)
    assert r.returncode == 0, r.stderr
    pin = json.loads((other / "images.json").read_text())[tag]
    assert pin["via"] == "import"
    r = subprocess.run(base + ["run", "--temp", "0", "--seed", "1", model, "hello there"],
                       capture_output=True,
                       text=True, env=offline_env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


# -- real operations: where serve listens, API keys, stop signals (native and podman)

def test_serve_listens_on_loopback_unless_told(store, model, engine):
    from netns import PeerHost
    flags, run_env = engine
    require("ip (iproute2)", have("ip"))
    with PeerHost() as peer:
        for extra, reachable in (((), False), (("--host", "0.0.0.0"), True)):
            proc, port = start_serving(store, model, flags, run_env, *extra)
            try:
                assert http_status(port) == 200
                assert peer.can_connect(port) == reachable, extra
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
    assert leftovers(store, run_env) == []


def test_api_key_is_required_and_never_shown(store, model, engine):
    flags, run_env = engine
    key = "s3cret-api-key-%d" % os.getpid()
    keyed = dict(run_env, RAMALAMA_API_KEY=key)
    proc, port = start_serving(store, model, flags, keyed)
    try:
        assert http_status(port) == 401
        assert http_status(port, {"Authorization": "Bearer wrong"}) == 401
        assert http_status(port, {"Authorization": "Bearer " + key}) == 200
        cmdlines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert key not in cmdlines
        shown = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)] + flags
                               + ["ps", "--json"], capture_output=True, text=True, env=run_env)
        assert key not in shown.stdout + shown.stderr
        if "CONTAINERS_CONF" in run_env:
            name = json.loads(shown.stdout)[0]["name"]
            inspect = podman(run_env, "inspect", "--format", "{{json .Config.Cmd}} {{json .Args}}",
                             name).stdout
            assert "llama-server" in inspect and key not in inspect
        # run and its chat send the key
        r = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)] + flags
                           + ["run", "--temp", "0", "--seed", "1", model, "hello there"],
                           capture_output=True, text=True, env=keyed, timeout=300)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
        assert key not in r.stdout + r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert key not in out + err
    assert leftovers(store, run_env) == []


@pytest.mark.parametrize("command", ["serve", "run"])
def test_stop_signals_leave_nothing_running(store, model, engine, command):
    """SIGTERM (systemd, kill, timeout), SIGHUP (a closed terminal) and SIGINT (Ctrl-C) while the
    server runs: it is stopped, nothing is left, and the exit status is 128 + the signal."""
    from conftest import record
    flags, run_env = engine
    bad = 0
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if command == "serve":
            proc, _port = start_serving(store, model, flags, run_env)
        else:                                  # waits for a prompt on stdin while the server runs
            proc = ramalama(store, *flags, "run", model, env=run_env, stdin=subprocess.PIPE)
            deadline = time.time() + 120
            while not leftovers(store, run_env) and time.time() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        left = leftovers(store, run_env)
        ok = proc.returncode == 128 + sig and left == [] and "Traceback" not in err
        bad += not ok
        assert ok, (signal.Signals(sig).name, proc.returncode, left, err[-2000:])
    record("stop signals x %s x %s" % (command, "podman" if len(flags) > 1 else "native"), 3, bad,
           "0 containers and 0 processes left")
