"""Command lines for every engine x runtime x GPU kind (golden), image pinning, GPU detection,
deployment files. Everything here runs through --dryrun or pure functions."""
import json
import os
import re
import shlex

import pytest
import yaml

import ramalama

DIGEST = "sha256:" + "ab" * 32
IMAGE = "quay.io/ramalama/ramalama@" + DIGEST


def opts(**kw):
    base = dict(runtime="llama.cpp", model="/m/tiny.gguf", mmproj=None, template=None,
                alias="ollama://tiny:latest",
                host="0.0.0.0", port=8080, ctx_size=None, ngl=0, threads=None, temp=None, seed=None,
                extra=None)
    base.update(kw)
    return ramalama.ServeOptions(**base)


def test_runtime_argv_llama_cpp_and_vllm():
    assert ramalama.runtime_argv(opts()) == [
        "llama-server", "--host", "0.0.0.0", "--port", "8080", "--model", "/m/tiny.gguf",
        "--alias", "ollama://tiny:latest", "--n-gpu-layers", "0"]
    full = opts(ctx_size=4096, ngl=999, threads=4, temp=0.2, seed=7, mmproj="/m/mmproj.gguf",
                template="/m/template.jinja", extra="--flash-attn on --no-webui")
    assert ramalama.runtime_argv(full) == [
        "llama-server", "--host", "0.0.0.0", "--port", "8080", "--model", "/m/tiny.gguf",
        "--alias", "ollama://tiny:latest", "--ctx-size", "4096", "--n-gpu-layers", "999", "--threads", "4",
        "--temp", "0.2", "--seed", "7", "--mmproj", "/m/mmproj.gguf", "--jinja", "--chat-template-file",
        "/m/template.jinja", "--flash-attn", "on", "--no-webui"]
    assert ramalama.runtime_argv(opts(runtime="vllm", ctx_size=2048, seed=1, model="/m")) == [
        "vllm", "serve", "/m", "--host", "0.0.0.0", "--port", "8080", "--served-model-name",
        "ollama://tiny:latest", "--max-model-len", "2048", "--seed", "1"]


@pytest.mark.parametrize("engine, gpu, flags", [
    ("podman", "none", []),
    ("podman", "nvidia", ["--device", "nvidia.com/gpu=all"]),
    ("docker", "nvidia", ["--gpus", "all"]),
    ("podman", "amd", ["--device", "/dev/kfd", "--device", "/dev/dri"]),
    ("docker", "amd", ["--device", "/dev/kfd", "--device", "/dev/dri"]),
    ("podman", "intel", ["--device", "/dev/dri"]),
    ("docker", "intel", ["--device", "/dev/dri"]),
])
@pytest.mark.parametrize("runtime", ["llama.cpp", "vllm"])
def test_container_argv_golden(engine, gpu, flags, runtime):
    o = opts(runtime=runtime, model="/mnt/models/tiny.gguf")
    argv = ramalama.container_argv(engine, "/usr/bin/" + engine, IMAGE, ramalama.runtime_argv(o),
                                   [("/s/tiny.gguf", "/mnt/models/tiny.gguf")],
                                   name="ramalama-x", labels={"ai.ramalama": "true"}, gpu=gpu,
                                   devices=["/dev/fuse"], publish="8080:8080")
    assert argv == (["/usr/bin/" + engine, "run", "--rm", "-d", "--name", "ramalama-x", "--label",
                     "ai.ramalama=true",
                     "--cap-drop=all", "--security-opt=no-new-privileges", "--init", "-p", "8080:8080",
                     "--mount=type=bind,src=/s/tiny.gguf,destination=/mnt/models/tiny.gguf,ro=true"]
                    + flags + ["--device", "/dev/fuse", IMAGE] + ramalama.runtime_argv(o))


def test_run_container_has_no_network_only_a_socket():
    o = opts(host="/run/ramalama/llama.sock")
    argv = ramalama.container_argv("podman", "podman", IMAGE, ramalama.runtime_argv(o), [], name="n",
                                   labels={}, gpu="none", devices=[],
                                   socket_dir="/tmp/ramalama-x")
    assert "--network=none" in argv and "-p" not in argv
    assert "--mount=type=bind,src=/tmp/ramalama-x,destination=/run/ramalama" in argv
    assert argv[argv.index("--host") + 1] == "/run/ramalama/llama.sock"


def test_gpu_detection():
    none = lambda path: False  # noqa: E731
    assert ramalama.detect_gpu({}, exists=lambda p: p == "/dev/nvidia0", which=lambda t: None) == "nvidia"
    assert ramalama.detect_gpu({}, exists=none, which=lambda t: t == "nvidia-smi"
                               and "/usr/bin/nvidia-smi") == "nvidia"
    assert ramalama.detect_gpu({}, exists=lambda p: p == "/dev/kfd", which=lambda t: None) == "amd"
    assert ramalama.detect_gpu({}, exists=none, which=lambda t: None, vendors=["0x1af4", "0x8086"]) == "intel"
    assert ramalama.detect_gpu({}, exists=none, which=lambda t: None, vendors=[]) == "none"
    assert ramalama.detect_gpu({"RAMALAMA_GPU": "AMD"}, exists=none, which=lambda t: None,
                               vendors=[]) == "amd"


@pytest.fixture
def pulled(cli, model_file):
    assert cli("pull", "file://%s" % model_file).code == 0
    return "file://%s" % model_file


def pin(store, image, digest=DIGEST):
    """Record a pin the way a previous run would have."""
    path = store / "images.json"
    pins = json.loads(path.read_text()) if path.exists() else {}
    pins[image] = {"digest": digest, "via": "registry", "pinned": "2026-11-25T00:00:00Z"}
    path.write_text(json.dumps(pins))


@pytest.mark.parametrize("gpu, image",
                         [("none", "quay.io/ramalama/ramalama"), ("nvidia", "quay.io/ramalama/cuda"),
                                        ("amd", "quay.io/ramalama/rocm"),
                                        ("intel", "quay.io/ramalama/intel-gpu")])
def test_serve_dryrun_uses_the_gpu_image_by_digest(cli, store, pulled, model_file, gpu, image):
    pin(store, image + ":latest")
    r = cli("--engine", "podman", "--dryrun", "serve", "--name", "tiny", "--port", "8081", pulled,
            env_extra={"RAMALAMA_GPU": gpu})
    assert r.code == 0, r
    argv = shlex.split(r.out)
    assert argv[:6] == ["podman", "run", "--rm", "-d", "--name", "tiny"]
    assert "%s@%s" % (image, DIGEST) in argv and not [a for a in argv if a.endswith(":latest")]
    assert "--mount=type=bind,src=%s/repos/file%s/tiny.gguf,destination=/mnt/models/tiny.gguf,ro=true" % (
        store, model_file) in argv
    assert argv[argv.index("-p") + 1] == "127.0.0.1:8081:8081"       # this host only unless --host says
    assert argv[argv.index("--n-gpu-layers") + 1] == ("0" if gpu == "none" else "999")
    assert "ai.ramalama.url=http://127.0.0.1:8081/v1" in argv


def test_serve_dryrun_natively_and_vllm(cli, store, pulled, model_file):
    r = cli("--nocontainer", "--dryrun", "serve", "--port", "9000", "--host", "127.0.0.1", "--ctx-size",
            "1024",
            "--ngl", "5", pulled)
    assert shlex.split(r.out) == [
        "llama-server", "--host", "127.0.0.1", "--port", "9000", "--model",
        "%s/repos/file%s/tiny.gguf" % (store, model_file), "--alias", pulled, "--ctx-size", "1024",
        "--n-gpu-layers", "5"]
    r = cli("--nocontainer", "--runtime", "vllm", "--dryrun", "serve", pulled)
    assert shlex.split(r.out)[:3] == ["vllm", "serve", "%s/repos/file%s/tiny.gguf" % (store, model_file)]


def test_run_dryrun_uses_a_socket(cli, store, pulled):
    pin(store, "quay.io/ramalama/ramalama:latest")
    r = cli("--engine", "docker", "--dryrun", "run", pulled, "hello", env_extra={"RAMALAMA_GPU": "none"})
    argv = shlex.split(r.out)
    assert "--network=none" in argv and "-p" not in argv
    assert argv[argv.index("--host") + 1] == "/run/ramalama/llama.sock"
    r = cli("--nocontainer", "--dryrun", "run", pulled, "hello")
    host = shlex.split(r.out)[2]
    assert re.fullmatch(r"/tmp/ramalama-[^/]+/llama\.sock", host)


def test_tools_dryrun_in_a_container_without_network(cli, store, pulled, model_file, tmp_path):
    pin(store, "quay.io/ramalama/cuda:latest")
    gpu = {"RAMALAMA_GPU": "nvidia", "CUDA_VISIBLE_DEVICES": "1"}
    r = cli("--engine", "podman", "--dryrun", "bench", "--name", "b", "--format", "json", "--threads", "3",
            pulled,
            env_extra=gpu)
    argv = shlex.split(r.out)
    image = "quay.io/ramalama/cuda@" + DIGEST
    mount = "--mount=type=bind,src=%s/repos/file%s/tiny.gguf,destination=/mnt/models/tiny.gguf,ro=true" % (
        store, model_file)
    assert argv[:5] == ["podman", "run", "--rm", "--name", "b"] and "-d" not in argv and "-p" not in argv
    assert "--network=none" in argv and mount in argv and "--cap-drop=all" in argv
    assert "--log-driver=passthrough" in argv            # output straight to our pipes, none lost at exit
    assert "nvidia.com/gpu=1" in argv and "CUDA_VISIBLE_DEVICES=0" in argv          # as run does it
    assert argv[argv.index(image) + 1:] == ["llama-bench", "-m", "/mnt/models/tiny.gguf", "-ngl", "999",
                                            "-t", "3",
                                            "-o", "json"]
    text = tmp_path / "wiki.txt"
    text.write_text("words " * 10)
    r = cli("--engine", "podman", "--dryrun", "perplexity", "--file", text, "--ctx-size", "64", pulled,
            env_extra=gpu)
    argv = shlex.split(r.out)
    assert "--mount=type=bind,src=%s,destination=/data/0-wiki.txt,ro=true" % text in argv
    assert argv[argv.index(image) + 1:] == ["llama-perplexity", "-m", "/mnt/models/tiny.gguf", "-f",
                                            "/data/0-wiki.txt", "-ngl", "999", "--ctx-size", "64"]
    r = cli("--nocontainer", "--dryrun", "perplexity", "--file", text, pulled)
    assert shlex.split(r.out) == ["llama-perplexity", "-m", "%s/repos/file%s/tiny.gguf" % (store, model_file),
                                  "-f", str(text), "-ngl", "0"]


def test_several_models_dryrun_go_to_the_router(cli, store, pulled, model_file, tmp_path):
    other = tmp_path / "b" / "tiny.gguf"                 # same file name: the second gets "-2"
    other.parent.mkdir()
    other.write_bytes(model_file.read_bytes() + b"")
    assert cli("pull", "file://%s" % other).code == 0
    pin(store, "quay.io/ramalama/ramalama:latest")
    r = cli("--engine", "podman", "--dryrun", "serve", "--models-max", "2", "--ctx-size", "256", pulled,
            "file://%s" % other, env_extra={"RAMALAMA_GPU": "none"})
    assert r.code == 0, r
    argv = shlex.split(r.out)
    mounts = [a for a in argv if a.startswith("--mount=")]
    bind = "--mount=type=bind,src=%s/repos/file%s/tiny.gguf,destination=/mnt/models/%s/tiny.gguf,ro=true"
    assert mounts == [bind % (store, model_file, "tiny"), bind % (store, other, "tiny-2")]
    tail = argv[argv.index("quay.io/ramalama/ramalama@" + DIGEST) + 1:]
    assert tail == ["llama-server", "--host", "0.0.0.0", "--port", "8080", "--models-dir", "/mnt/models",
                    "--models-max", "2", "--ctx-size", "256", "--n-gpu-layers", "0"]
    assert "ai.ramalama.model=%s,file://%s" % (pulled, other) in argv
    r = cli("--dryrun", "serve", "--generate", "kube", pulled, "file://%s" % other)
    docs = list(yaml.safe_load_all(r.out.split("\n", 1)[1]))
    spec = docs[0]["spec"]["template"]["spec"]
    assert [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]] == ["/mnt/models/tiny/tiny.gguf",
                                                                            "/mnt/models/tiny-2/tiny.gguf"]
    assert "--models-dir" in spec["containers"][0]["command"]


def test_served_names():
    assert ramalama.served_name("ollama://smollm:135m") == "smollm:135m"
    assert ramalama.served_name("hf://bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M") == (
        "bartowski-SmolLM2-135M-Instruct-GGUF:Q4_K_M")
    assert ramalama.served_name("file:///srv/models/llama-3.2.gguf") == "llama-3.2"
    assert ramalama.served_name("https://example.com/m/x,y=z.gguf") == "x-y-z"
    hidden = ramalama.served_name("oci://registry.test/models/../.hidden:1")
    assert hidden == "registry.test-models-..-.hidden:1"
    assert ramalama.served_name("file:///m/.gguf") == "model"
    assert ramalama.served_name("llama3.2:1b") == "llama3.2:1b"


def test_image_pins(cli, store, pulled):
    r = cli("--engine", "/nonexistent/podman", "--image", "quay.io/x/y:1", "serve", "--pull", "never", pulled)
    assert r.code == 1 and "is not in the" in r.err and "--image quay.io/x/y@sha256:<digest>" in r.err
    # a dry run asks nobody: with no pin it shows the tag and says it is unresolved
    r = cli("--engine", "/nonexistent/podman", "--image", "quay.io/x/y:1", "--dryrun", "serve", pulled)
    assert r.code == 0 and "quay.io/x/y:1" in shlex.split(r.out) and "unresolved" in r.err, r
    assert not (store / "images.json").exists()
    pin(store, "quay.io/x/y:1")
    r = cli("--engine", "/nonexistent/podman", "--image", "quay.io/x/y:1", "--dryrun", "serve", pulled)
    assert r.code == 0 and "quay.io/x/y@" + DIGEST in r.out
    info = json.loads(cli("info").out)
    assert info["images"]["quay.io/x/y:1"]["digest"] == DIGEST


def test_generate_kube_quadlet_compose(cli, store, pulled, tmp_path, model_file):
    pin(store, "quay.io/ramalama/ramalama:latest")
    out = tmp_path / "deploy"
    for kind in ("kube", "quadlet", "compose"):
        r = cli("--engine", "podman", "serve", "--name", "tiny", "--port", "8085", "--generate", "%s:%s"
                % (kind, out),
                pulled, env_extra={"RAMALAMA_GPU": "none"})
        assert r.code == 0, r
    blob_path = "%s/repos/file%s/tiny.gguf" % (store, model_file)
    image = "quay.io/ramalama/ramalama@" + DIGEST
    kube = list(yaml.safe_load_all((out / "tiny.yaml").read_text()))
    deploy, service = kube
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image and container["command"][0] == "llama-server"
    assert container["volumeMounts"] == [{"name": "model-0", "mountPath": "/mnt/models/tiny.gguf",
                                          "readOnly": True}]
    assert deploy["spec"]["template"]["spec"]["volumes"] == [
        {"name": "model-0", "hostPath": {"path": blob_path, "type": "File"}}]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert service["spec"]["ports"] == [{"port": 8085, "targetPort": 8085}]
    compose = yaml.safe_load((out / "compose.yaml").read_text())["services"]["tiny"]
    assert compose["image"] == image and compose["ports"] == ["127.0.0.1:8085:8085"]
    assert compose["volumes"] == [{"type": "bind", "source": blob_path, "target": "/mnt/models/tiny.gguf",
                                   "read_only": True}]
    quadlet = (out / "tiny.container").read_text().splitlines()
    assert "Image=" + image in quadlet and "PublishPort=127.0.0.1:8085:8085" in quadlet
    assert "Mount=type=bind,src=%s,destination=/mnt/models/tiny.gguf,ro=true" % blob_path in quadlet
    assert [line for line in quadlet if line.startswith("Exec=llama-server --host 0.0.0.0 --port 8085")]


def test_generate_with_a_host_and_an_api_key_refers_to_secrets(cli, store, pulled, tmp_path):
    pin(store, "quay.io/ramalama/ramalama:latest")
    out = tmp_path / "deploy"
    key = "k3y-never-in-files"
    for kind in ("kube", "quadlet", "compose"):
        r = cli("--engine", "podman", "serve", "--name", "tiny", "--host", "0.0.0.0", "--port", "8085",
                "--generate", "%s:%s" % (kind, out), pulled,
                env_extra={"RAMALAMA_GPU": "none", "RAMALAMA_API_KEY": key})
        assert r.code == 0 and ("secret" in r.err or "RAMALAMA_API_KEY" in r.err), r
    texts = {p.name: p.read_text() for p in out.iterdir()}
    assert not [name for name, text in texts.items() if key in text]
    deploy = list(yaml.safe_load_all(texts["tiny.yaml"]))[0]
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "LLAMA_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": "tiny-api-key", "key": "api-key"}}}]
    compose = yaml.safe_load(texts["compose.yaml"])["services"]["tiny"]
    assert compose["ports"] == ["8085:8085"]
    assert compose["environment"] == {"LLAMA_API_KEY": "${RAMALAMA_API_KEY}"}
    quadlet = texts["tiny.container"].splitlines()
    assert "PublishPort=8085:8085" in quadlet
    assert "Secret=tiny-api-key,type=env,target=LLAMA_API_KEY" in quadlet


@pytest.mark.parametrize("engine", ["podman", ""])
def test_api_key_reaches_the_runtime_by_environment_only(cli, store, pulled, engine):
    pin(store, "quay.io/ramalama/ramalama:latest")
    key = "k3y-never-in-argv"
    flags = ["--engine", engine] if engine else ["--nocontainer"]
    for how in ({"RAMALAMA_API_KEY": key}, {}):
        argv = ["--api-key", key] if not how else []
        r = cli(*flags, "--dryrun", "serve", *argv, pulled, env_extra=dict(how, RAMALAMA_GPU="none"))
        assert r.code == 0, r
        assert key not in r.out + r.err
        if engine:
            words = shlex.split(r.out)
            assert words[words.index("--env") + 1] == "LLAMA_API_KEY"
    info = cli("info", env_extra={"RAMALAMA_API_KEY": key})
    assert key not in info.out and json.loads(info.out)["config"]["settings"]["api_key"] == "***"


def test_several_models_answer_to_the_names_typed(cli, store, env, pulled, model_file, tmp_path):
    other = tmp_path / "b" / "other.gguf"
    other.parent.mkdir()
    other.write_bytes(model_file.read_bytes())
    assert cli("pull", "file://%s" % other).code == 0
    config = tmp_path / "home" / ".config" / "ramalama"
    config.mkdir(parents=True, exist_ok=True)
    (config / "shortnames.conf").write_text('[shortnames]\n"tiny:1" = "%s"\n' % pulled)
    pin(store, "quay.io/ramalama/ramalama:latest")
    r = cli("--engine", "podman", "--dryrun", "serve", "tiny:1", "file://%s" % other,
            env_extra={"RAMALAMA_GPU": "none"})
    assert r.code == 0, r
    dests = [a.split("destination=")[1].split(",")[0] for a in shlex.split(r.out) if a.startswith("--mount=")]
    assert dests == ["/mnt/models/tiny:1/tiny.gguf", "/mnt/models/other/other.gguf"]
    r = cli("--nocontainer", "--dryrun", "serve", "tiny:1", "file://%s" % other)
    models_dir = shlex.split(r.out)[shlex.split(r.out).index("--models-dir") + 1]
    assert models_dir.startswith("/tmp/ramalama-models-") and not os.path.exists(models_dir)   # links removed


def test_push_and_convert_types_follow_flag_then_config(cli, pulled):
    target = "oci://registry.example.com/models/tiny:1"
    assert cli("--dryrun", "push", pulled, target).out.endswith(" as modelpack\n")
    r = cli("--dryrun", "push", pulled, target, env_extra={"RAMALAMA_CONVERT_TYPE": "raw"})
    assert r.out.endswith(" as raw\n"), r                                 # ramalama's convert_type
    r = cli("--dryrun", "push", "--type", "car", pulled, target, env_extra={"RAMALAMA_CONVERT_TYPE": "raw"})
    assert r.out.endswith(" as car\n")
    assert cli("--dryrun", "convert", pulled, target).out.endswith(" as raw\n")       # ramalama's default
    r = cli("--dryrun", "push", pulled, target, env_extra={"RAMALAMA_CONVERT_TYPE": "tarball"})
    assert r.code == 2 and "convert_type must be artifact, raw or car" in r.err


def test_deployment_names_are_dns_labels():
    import re
    digest = "@sha256:" + "ab" * 32
    for ref, name in (("ollama://tiny:latest", "tiny-latest"),
                      ("file:///srv/models/Tiny.Q4.gguf", "srv-models-tiny-q4-gguf"),
                      ("hf://org/Repo_GGUF:Q8_0", "org-repo-gguf-q8-0"),
                      ("oci://reg.test:5000/a/b" + digest, "reg-test-5000-a-b-sha256-abababababababa")):
        assert ramalama.deployment_name(ref) == name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40
