"""Independent writers of OCI artifacts for tests: an OCI image layout on disk, written here
without ramalama.py, and copied into the registry by skopeo (or pushed with plain urllib), so
the reader is not only tested against our own writer."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import urllib.request
from pathlib import Path


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, annotations: dict = None, **extra) -> dict:
    d = {"mediaType": media_type, "digest": digest(data), "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    d.update(extra)
    return d


def write_layout(root: Path, tag: str, config: tuple, layers: list, artifact_type: str = None,
                 manifest_type: str = "application/vnd.oci.image.manifest.v1+json") -> str:
    """config = (media type, bytes); layers = [(media type, bytes, annotations or None)].
    Returns the manifest digest."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> None:
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)

    manifest = {"schemaVersion": 2, "mediaType": manifest_type,
                "config": descriptor(config[0], config[1]), "layers": []}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    put(config[1])
    for media_type, data, notes in layers:
        put(data)
        manifest["layers"].append(descriptor(media_type, data, notes))
    raw = json.dumps(manifest).encode()
    put(raw)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [descriptor(manifest_type, raw,
                                                          {"org.opencontainers.image.ref.name": tag})]}
    (root / "index.json").write_text(json.dumps(index))
    return digest(raw)


def skopeo_copy(layout: Path, tag: str, host: str, name: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:%s:%s" % (layout, tag),
                    "docker://%s/%s:%s" % (host, name, tag)], check=True, capture_output=True, timeout=120)


def tar_layer(files: dict, symlinks: dict = None, gz: bool = False, extra=None) -> bytes:
    """A tar (or tar+gzip) of {path: bytes} and {path: link target}; `extra(tar)` may add
    hostile members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for path, target in (symlinks or {}).items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        if extra:
            extra(tar)
    data = buf.getvalue()
    return gzip.compress(data, mtime=0) if gz else data


def http_push(host: str, name: str, tag: str, manifest: dict, blobs: list, scheme: str = "http",
              cafile: str = None) -> str:
    """Push blobs and a manifest with plain urllib (monolithic POST + PUT); https with `cafile`."""
    import ssl
    context = ssl.create_default_context(cafile=cafile) if scheme == "https" else None
    base = "%s://%s" % (scheme, host)

    def send(req):
        return urllib.request.urlopen(req, context=context)
    for data in blobs:
        req = urllib.request.Request("%s/v2/%s/blobs/uploads/" % (base, name), method="POST", data=b"")
        with send(req) as r:
            location = r.headers["Location"]
        if location.startswith("/"):
            location = base + location
        sep = "&" if "?" in location else "?"
        req = urllib.request.Request(location + sep + "digest=" + digest(data), data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        send(req).close()
    raw = json.dumps(manifest).encode()
    req = urllib.request.Request("%s/v2/%s/manifests/%s" % (base, name, tag), data=raw, method="PUT",
                                 headers={"Content-Type": manifest["mediaType"]})
    send(req).close()
    return digest(raw)
