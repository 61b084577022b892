"""One model over several hosts with llama.cpp's RPC backend, for real: `ramalama rpc-server`
workers (llama.cpp's RPC worker built with -DGGML_RPC=ON) on two 127.0.0.1 ports play two hosts,
natively and in the pinned image; `serve --rpc` spreads the model's layers over them."""
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from serving import free_port, llama_processes, podman, post_json, ramalama, start_serving


def completion(port: int, prompt: str = "hello there") -> dict:
    """Greedy decoding of 32 tokens whatever the model says (ignore_eos): the same weights on the
    same backends give the same tokens."""
    return post_json(port, "/completion", {"prompt": prompt, "n_predict": 32, "temperature": 0, "seed": 1,
                                           "ignore_eos": True, "n_probs": 1})


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def established(port: int) -> list:
    """TCP connections to a local port that are still open."""
    out = subprocess.run(["ss", "-tnH", "state", "established", "( sport = :%d )" % port],
                         capture_output=True, text=True).stdout
    return out.split("\n") if out.strip() else []


def start_worker(store, env, *flags):
    port = free_port()
    proc = ramalama(store, "--debug", *flags, "rpc-server", "--port", str(port), env=env)
    deadline = time.time() + 60
    while not listening(port):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
        time.sleep(0.1)
    return proc, port


def stop(proc) -> tuple:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


@pytest.fixture
def workers(store, path_env):
    procs = [start_worker(store, path_env, "--nocontainer") for _ in range(2)]
    yield procs
    for proc, _port in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_model_spread_over_two_workers_answers_as_one_host_does(store, model, path_env, workers):
    nodes = ",".join("127.0.0.1:%d" % port for _proc, port in workers)
    single, single_port = start_serving(store, model, ["--nocontainer"], path_env, "--temp", "0", "--seed",
                                        "1")
    try:
        alone = completion(single_port)
    finally:
        stop(single)
    spread, port = start_serving(store, model, ["--nocontainer"], path_env, "--temp", "0", "--seed", "1",
                                 "--rpc", nodes)
    try:
        together = completion(port)
        assert all(established(p) for _proc, p in workers)          # both workers are in use
    finally:
        status, said = stop(spread)
    assert status == 143 and "Traceback" not in said
    # greedy decoding on the same CPU backend: the same 32 tokens, whichever host holds the layers
    assert together["tokens_predicted"] == alone["tokens_predicted"] == 32
    assert together["content"] == alone["content"]
    assert [p["top_logprobs"][0]["id"] for p in together["completion_probabilities"]] == [
        p["top_logprobs"][0]["id"] for p in alone["completion_probabilities"]]
    assert [established(p) for _proc, p in workers] == [[], []]     # no connection left open
    for proc, _port in workers:
        status, log = stop(proc)
        assert status == 143, log
        # the worker's own log (--debug sets GGML_RPC_DEBUG): it was given buffers and tensors
        assert "[alloc_buffer]" in log and "[set_tensor]" in log, log[-2000:]
    assert llama_processes(str(store)) == []


def test_a_worker_that_dies_stops_serve_with_one_line(store, model, path_env, workers):
    nodes = ",".join("127.0.0.1:%d" % port for _proc, port in workers)
    spread, port = start_serving(store, model, ["--nocontainer"], path_env, "--rpc", nodes)
    try:
        completion(port)
        workers[1][0].kill()
        workers[1][0].communicate()
        with pytest.raises(OSError):                               # the server goes down mid-answer
            completion(port)
        out, err = spread.communicate(timeout=60)
    finally:
        if spread.poll() is None:
            spread.kill()
    assert spread.returncode == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("Error: the model server stopped with exit status")
    assert "RPC server crashed" in line
    assert llama_processes(str(store)) == []


def test_an_unreachable_worker_is_one_line(store, model, path_env):
    port = free_port()                              # nothing listens there
    r = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store), "--nocontainer",
                        "serve",
                        "--rpc", "127.0.0.1:%d" % port, model], capture_output=True, text=True, env=path_env,
                       timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: the model server exited before it was ready: %s" % r.stderr.split("ready: ", 1)[1].strip()]
    assert "Failed to connect to 127.0.0.1:%d" % port in r.stderr


def test_rpc_workers_by_flag_environment_and_in_a_container(cli, store, model, env):
    from test_launch import pin
    r = cli("--nocontainer", "--dryrun", "serve", "--rpc", "10.0.0.2:50052,10.0.0.3:50052", model)
    argv = r.out.split()
    assert argv[argv.index("--rpc") + 1] == "10.0.0.2:50052,10.0.0.3:50052"
    assert argv[argv.index("--n-gpu-layers") + 1] == "999"            # the layers go to the workers
    r = cli("--nocontainer", "--dryrun", "run", model, "hi",
            env_extra={"RAMALAMA_LLAMACPP_RPC_NODES": "w1:50052"})
    assert "--rpc w1:50052" in r.out
    pin(store, "quay.io/ramalama/ramalama:latest")
    r = cli("--engine", "podman", "--dryrun", "serve", "--port", "8085", "--rpc", "127.0.0.1:50052", model,
            env_extra={"RAMALAMA_GPU": "none"})
    argv = r.out.split()
    assert "--network=host" in argv and "-p" not in argv                 # workers on this host's loopback
    assert argv[argv.index("--host") + 1] == "127.0.0.1"                 # still this host only
    r = cli("--nocontainer", "serve", "--rpc", "w1", model)
    assert r.code == 2 and r.err.strip() == "Error: RPC workers are HOST:PORT[,HOST:PORT...], not 'w1'"
    r = cli("--nocontainer", "--runtime", "vllm", "serve", "--rpc", "w1:1", model)
    assert r.code == 2 and "vLLM" in r.err
    r = cli("--nocontainer", "--dryrun", "rpc-server", "--host", "0.0.0.0", "--port", "50099")
    assert r.out.split()[1:] == ["--host", "0.0.0.0", "--port", "50099"]
    assert "without authentication" in r.err


def serve_over(store, model, path_env, worker_port: int) -> None:
    """A native serve over the one worker at worker_port (once it listens) answers 32 tokens."""
    deadline = time.time() + 60
    while not listening(worker_port) and time.time() < deadline:
        time.sleep(0.2)
    spread, port = start_serving(store, model, ["--nocontainer"], path_env, "--rpc", "127.0.0.1:%d"
                                 % worker_port)
    try:
        assert completion(port)["tokens_predicted"] == 32
    finally:
        stop(spread)


def test_a_worker_in_the_pinned_image_holds_the_layers(store, model, env, path_env, podman_image):
    tag, penv = podman_image
    run_env = dict(env, **penv)
    port = free_port()
    flags = ["--engine", "podman", "--image", tag]
    r = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)] + flags
                       + ["rpc-server", "-d", "--name", "rpc-worker", "--port", str(port)],
                       capture_output=True, text=True, env=run_env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "rpc-worker", r.stderr
    try:
        serve_over(store, model, path_env, port)
        ps = json.loads(subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)]
                                       + flags
                                       + ["ps", "--json"], capture_output=True, text=True,
                                       env=run_env).stdout)
        assert [(c["name"], c["url"]) for c in ps] == [("rpc-worker", "rpc://127.0.0.1:%d" % port)]
    finally:
        podman(run_env, "rm", "-f", "rpc-worker")


def test_generated_workers_run_and_hold_a_served_model(cli, store, model, env, path_env, podman_image,
                                                       tmp_path):
    """rpc-server --generate: a StatefulSet of workers that validates against the Kubernetes API
    schemas, and a compose file that podman-compose runs; a native serve spreads over it."""
    import shutil
    import yaml
    from conftest import require
    from test_cluster import INIT_VERSIONS, validate
    tag, penv = podman_image
    run_env = dict(env, **penv)
    image = ["--engine", "podman", "--image", tag]
    r = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)] + image
                       + ["rpc-server", "--generate", "kube:%s" % tmp_path, "--replicas", "3"],
                       capture_output=True, text=True, env=run_env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ramalama-rpc-0.ramalama-rpc:50052,ramalama-rpc-1.ramalama-rpc:50052,ramalama-rpc-2" in r.stderr
    docs = list(yaml.safe_load_all((tmp_path / "ramalama-rpc.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["StatefulSet", "Service"] and docs[1]["spec"]["clusterIP"] == "None"
    validate(docs, INIT_VERSIONS)
    require("podman-compose (apt-get install podman-compose)", shutil.which("podman-compose"))
    port = free_port()
    r = subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)] + image
                       + ["rpc-server", "--generate", "compose:%s" % tmp_path, "--port", str(port)],
                       capture_output=True, text=True, env=run_env, timeout=300)
    assert r.returncode == 0, r.stderr
    compose = ["podman-compose", "-p", "workers", "-f", str(tmp_path / "compose.yaml")]
    try:
        r = subprocess.run(compose + ["up", "-d"], capture_output=True, text=True, env=run_env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        serve_over(store, model, path_env, port)
    finally:
        subprocess.run(compose + ["down"], capture_output=True, env=run_env, timeout=120)
