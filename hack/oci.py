#!/usr/bin/env python3
"""Writes an OCI image layout, tarred, with one uncompressed layer: the images of the local
environment, built without a container engine or registry (hack/images.sh, hack/image.sh).

    hack/oci.py --out FILE --ref NAME:TAG [--user U] [--port P/tcp ...]
                [--entrypoint JSON] [--cmd JSON] [--env K=V ...] [--history TEXT]
                [--dir PATH:MODE ...] [--file SRC:DEST:MODE ...] [--text DEST:MODE:CONTENT ...]

Entries are written in the order given (directories first), owned by root, mtime 0, so the
same inputs give the same bytes. Modes are octal. `ctr images import` reads the result.
"""
import argparse
import hashlib
import io
import json
import tarfile


def info(name, kind, mode, size=0):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime, ti.uid, ti.gid = kind, mode, size, 0, 0, 0
    return ti


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--user", default="")
    p.add_argument("--port", action="append", default=[])
    p.add_argument("--entrypoint", default=None)
    p.add_argument("--cmd", default=None)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--history", default="hack/oci.py")
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--text", action="append", default=[])
    a = p.parse_args()

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in a.dir:
            path, mode = d.rsplit(":", 1)
            t.addfile(info(path, tarfile.DIRTYPE, int(mode, 8)))
        for f in a.text:
            dest, mode, content = f.split(":", 2)
            data = content.encode()
            t.addfile(info(dest, tarfile.REGTYPE, int(mode, 8), len(data)), io.BytesIO(data))
        for f in a.file:
            src, dest, mode = f.rsplit(":", 2)
            data = open(src, "rb").read()
            t.addfile(info(dest, tarfile.REGTYPE, int(mode, 8), len(data)), io.BytesIO(data))
    layer = layer.getvalue()

    blobs = {}

    def blob(data, media):
        d = hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return {"mediaType": media, "digest": "sha256:" + d, "size": len(data)}

    layer_desc = blob(layer, "application/vnd.oci.image.layer.v1.tar")
    config = {"User": a.user, "WorkingDir": "/", "Env": a.env}
    if a.port:
        config["ExposedPorts"] = {port: {} for port in a.port}
    if a.entrypoint is not None:
        config["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd is not None:
        config["Cmd"] = json.loads(a.cmd)
    image = {
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created_by": a.history}],
    }
    config_desc = blob(json.dumps(image, sort_keys=True).encode(),
                       "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = blob(json.dumps(manifest, sort_keys=True).encode(),
                         "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {"io.containerd.image.name": a.ref,
                                    "org.opencontainers.image.ref.name": a.ref.rsplit(":", 1)[1]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_desc]}
    with tarfile.open(a.out, "w") as t:
        def add(name, data, kind=tarfile.REGTYPE, mode=0o644):
            t.addfile(info(name, kind, mode, len(data)), io.BytesIO(data) if data else None)
        add("blobs", b"", tarfile.DIRTYPE, 0o755)
        add("blobs/sha256", b"", tarfile.DIRTYPE, 0o755)
        for d, data in blobs.items():
            add("blobs/sha256/" + d, data)
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index, sort_keys=True).encode())


if __name__ == "__main__":
    main()
