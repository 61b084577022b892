"""Config layering, TOML details, env overrides, shortnames, and one-line errors."""
import pytest

from ramalama import ConfigError, load_config


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def dirs(tmp_path):
    """Two system dirs (like /usr/share/ramalama and /etc/ramalama) and a user config home."""
    return tmp_path / "usr-share", tmp_path / "etc", tmp_path / "xdg"


def load(dirs, **env):
    share, etc, xdg = dirs
    env.setdefault("HOME", "/nonexistent")
    env.setdefault("XDG_CONFIG_HOME", str(xdg))
    return load_config(env, system_dirs=(str(share), str(etc)))


def test_layers_merge_in_order(dirs):
    share, etc, xdg = dirs
    write(share / "ramalama.conf", "[ramalama]\nimage = 'share/image'\nngl = 10\nthreads = 2\n")
    write(etc / "ramalama.conf", "[ramalama]\nngl = -1  # all layers\n")
    write(etc / "ramalama.conf.d" / "50-b.conf", "[ramalama]\nthreads = 6\n")
    write(etc / "ramalama.conf.d" / "10-a.conf", "[ramalama]\nthreads = 4\ntemp = 1\n")
    write(xdg / "ramalama" / "ramalama.conf", "[ramalama]\nstore = \"/srv/store\"\n")
    cfg = load(dirs)
    assert cfg.get("image") == "share/image"
    assert cfg.get("ngl") == -1
    assert cfg.get("threads") == 6            # .conf.d files in name order, after ramalama.conf
    assert cfg.get("temp") == 1.0 and isinstance(cfg.get("temp"), float)
    assert cfg.get("store") == "/srv/store"
    assert [p.rsplit("/", 2)[-2:] for p in cfg.files] == [
        ["usr-share", "ramalama.conf"], ["etc", "ramalama.conf"], ["ramalama.conf.d", "10-a.conf"],
        ["ramalama.conf.d", "50-b.conf"], ["ramalama", "ramalama.conf"]]


def test_env_beats_files_and_ramalama_config_is_the_only_file(dirs, tmp_path):
    share, etc, xdg = dirs
    write(etc / "ramalama.conf", "[ramalama]\nstore = '/etc-store'\nimage = 'etc/image'\n")
    only = write(tmp_path / "only.conf", "[ramalama]\nruntime = 'vllm'\n")
    cfg = load(dirs, RAMALAMA_STORE="/env-store", RAMALAMA_TRANSPORTS="huggingface")
    assert cfg.get("store") == "/env-store" and cfg.get("transport") == "huggingface"
    cfg = load(dirs, RAMALAMA_CONFIG=str(only), RAMALAMA_IMAGE="env/image",
               RAMALAMA_CONTAINER_ENGINE="docker")
    assert cfg.files == [str(only)]
    assert (cfg.get("runtime"), cfg.get("store"), cfg.get("image"), cfg.get("engine")) == (
        "vllm", None, "env/image", "docker")


def test_unknown_keys_and_tables_are_kept_not_fatal(dirs):
    write(dirs[1] / "ramalama.conf",
          "[ramalama]\nrag_image = \"quay.io/x/rag\"\n[ramalama.download]\nconnections = 8\n")
    cfg = load(dirs)
    assert cfg.unknown_keys() == ["rag_image"]
    assert cfg.get("download") == {"connections": 8}


@pytest.mark.parametrize("text, fragment", [
    ("[ramalama]\nngl = \n", "Invalid value (at line 2, column 7)"),
    ("[ramalama]\nngl = 'many'\n", "[ramalama] ngl must be an integer, all or auto, not 'many'"),
    ("[ramalama]\ncontainer = 'maybe'\n", "[ramalama] container must be true or false"),
    ("[ramalama]\nngl = true\n", "[ramalama] ngl must be an integer, all or auto, not True"),
    ("[ramalama]\nport = '80a'\n", "[ramalama] port must be an integer, not '80a'"),
    ("[ramalama.runtimes.llama_cpp]\ntemp = 'hot'\n", "[ramalama.runtimes.llama_cpp] temp must be a number"),
    ("[ramalama]\nngl = 1\n[ramalama]\nngl = \n", "Cannot declare ('ramalama',) twice"),   # and broken
    ("ramalama = 3\n", "[ramalama] must be a table"),
])
def test_bad_config_names_file_and_problem(dirs, text, fragment):
    path = write(dirs[2] / "ramalama" / "ramalama.conf", text)
    with pytest.raises(ConfigError) as e:
        load(dirs)
    msg = str(e.value)
    assert msg.startswith(str(path) + ": ") and fragment in msg and "\n" not in msg


def test_missing_ramalama_config_file(dirs, tmp_path):
    with pytest.raises(ConfigError, match="RAMALAMA_CONFIG names .*missing.conf, which does not exist"):
        load(dirs, RAMALAMA_CONFIG=str(tmp_path / "missing.conf"))


def test_shortnames_from_every_dir_later_wins(dirs):
    share, etc, xdg = dirs
    write(share / "shortnames.conf",
          '[shortnames]\n"tiny" = "hf://a/tiny"\n"granite" = "ollama://granite3"\n')
    write(xdg / "ramalama" / "shortnames.conf", '[shortnames]\n"tiny" = "hf://b/tiny:Q8_0"\n')
    cfg = load(dirs)
    names = cfg.shortnames
    assert (names["tiny"], names["granite"]) == ("hf://b/tiny:Q8_0",
                                                 "ollama://granite3")   # files beat built-ins
    assert cfg.shortname_sources["granite"] == str(share / "shortnames.conf")
    assert names["tinyllama"] == "hf://TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF"             # a built-in
    assert cfg.shortname_sources["tinyllama"] == "built-in"
    write(etc / "shortnames.conf", "[shortnames]\ntiny = 3\n")
    with pytest.raises(ConfigError, match="shortnames.conf: \\[shortnames\\] must map names"):
        load(dirs).shortnames


def test_cli_reports_a_bad_config_in_one_line(cli, env, tmp_path):
    write(tmp_path / "home" / ".config" / "ramalama" / "ramalama.conf", "[ramalama\n")
    r = cli("list")
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and r.err.startswith("Error: ") and "ramalama.conf" in r.err
    assert "Traceback" not in r.err


def test_cli_resolves_shortnames(cli, tmp_path, model_file):
    write(tmp_path / "home" / ".config" / "ramalama" / "shortnames.conf",
          '[shortnames]\n"tiny" = "file://%s"\n' % model_file)
    assert cli("pull", "tiny").code == 0
    import json
    assert [m["shortname"] for m in json.loads(cli("list", "--json").out)] == ["tiny"]   # as ramalama's list
    r = cli("list", "--noheading")
    assert r.out.split()[0] == "file://%s" % model_file
    assert cli("rm", "tiny").code == 0
    assert cli("list", "--noheading").out == ""
