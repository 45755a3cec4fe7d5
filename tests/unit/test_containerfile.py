"""deploy/Containerfile, read as text (no container runtime here: it is not built in tests).

A pinned base, no dev extras, a non-root numeric user that matches the
Kubernetes manifests, and a HOME that the image creates.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "deploy/Containerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", TEXT)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_base_image_is_pinned_to_a_patch_release() -> None:
    [base] = [rest for word, rest in _instructions() if word == "ARG" and rest.startswith("BASE=")]
    image = base.removeprefix("BASE=")
    name, _, tag = image.partition(":")
    assert name == "python" and re.fullmatch(r"3\.\d+\.\d+-slim-\w+", tag), image
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert froms and all(f.split()[0] == "${BASE}" for f in froms)


def test_no_dev_dependencies_and_a_non_root_user_with_a_home() -> None:
    code = " ".join(f"{word} {rest}" for word, rest in _instructions())
    assert "[dev]" not in code and "pytest" not in code
    [user] = [rest for word, rest in _instructions() if word == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    run = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert f"--uid {uid}" in run and f"--gid {gid}" in run
    home = re.search(r"HOME=(\S+)", TEXT)
    assert home is not None
    assert f"--home-dir {home.group(1)}" in run and "--create-home" in run
    deployment = next(
        d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/workers.yaml").read_text())
        if d["kind"] == "Deployment"
    )  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))
