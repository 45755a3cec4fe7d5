"""A multi-host etcron cluster on one machine: every process in its own network namespace.

    deploy/netns-cluster.sh up [--dir DIR]      # 3 etcd members, 2 masters, 3 workers
    deploy/netns-cluster.sh status [--dir DIR]
    deploy/netns-cluster.sh down [--dir DIR]

Each host is a network namespace with its own address from 198.18.0.0/15 (reserved
for network testing, RFC 2544), joined to one bridge; the bridge holds ``.254``, so
the CLI in the root namespace reaches every host. etcd runs with TLS for clients and
peers and client certificates (deploy/etcd/make-certs.sh), auth on with the roles of
scheduler/roles.py (a password per role, 0600). Masters serve the API over TLS
with a token and sign every job; workers run only jobs signed by that key. Everything lives in DIR (default ``run/netns-cluster``):
certificates, configs, secrets, logs and ``state.json`` (what ``down`` removes).
Needs root, ``ip`` and ``openssl``. Nothing here is for production: see docs/deploy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "/cron"
HOSTS = {"etcd": 3, "master": 2, "worker": 3}
API_PORT, CLIENT_PORT, PEER_PORT = 8070, 2379, 2380


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"netns-cluster: ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _layout(tag: str, subnet: str) -> dict[str, dict[str, str]]:
    """host name -> {ns, addr}: etcd0.., master0.., worker0.."""
    hosts: dict[str, dict[str, str]] = {}
    base = {"etcd": 1, "master": 51, "worker": 101}
    for kind, n in HOSTS.items():
        for i in range(n):
            hosts[f"{kind}{i}"] = {
                "ns": f"{tag}-{kind[0]}{i}",
                "addr": f"{subnet}.{base[kind] + i}",
            }
    return hosts


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.state_file = self.dir / "state.json"

    # state -------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        if not self.state_file.exists():
            raise SystemExit(f"netns-cluster: no cluster in {self.dir} (run `up` first)")
        state: dict[str, Any] = json.loads(self.state_file.read_text())
        return state

    def save(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    # up ----------------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        if self.state_file.exists():
            raise SystemExit(f"netns-cluster: a cluster is up in {self.dir} (`down` first)")
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise SystemExit("netns-cluster: needs root and the `ip` command (iproute2)")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        tag = f"ecn{os.getpid() % 100000}"
        subnet = f"198.18.{200 + os.getpid() % 50}"
        state: dict[str, Any] = {
            "tag": tag, "bridge": f"{tag}br", "gateway": f"{subnet}.254",
            "hosts": _layout(tag, subnet), "pids": {}, "namespaces": [],
        }  # fmt: skip
        self.save(state)
        try:
            self._network(state)
            self._certs(state)
            self._etcd(state)
            asyncio.run(self._auth(state))
            self._secrets(state)
            for name in state["hosts"]:
                if not name.startswith("etcd"):
                    self._daemon(state, name)
            asyncio.run(self._wait_ready(state))
        except BaseException:
            self.down()
            raise
        return state

    def _network(self, state: dict[str, Any]) -> None:
        bridge = state["bridge"]
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{state['gateway']}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for host in state["hosts"].values():
            ns, veth = host["ns"], host["ns"].replace("-", "")
            _ip("netns", "add", ns)
            state["namespaces"].append(ns)
            self.save(state)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{host['addr']}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def _certs(self, state: dict[str, Any]) -> None:
        names = ",".join(["localhost", "127.0.0.1"] + [h["addr"] for h in state["hosts"].values()])
        subprocess.run(
            ["bash", str(ROOT / "deploy/etcd/make-certs.sh"), str(self.dir / "certs"), names,
             str(self.dir / "ca")],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def _spawn(self, state: dict[str, Any], name: str, argv: list[str]) -> None:
        ns = state["hosts"][name]["ns"]
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=self.dir,
        )  # fmt: skip
        log.close()
        state["pids"][name] = proc.pid
        self.save(state)

    def _etcd(self, state: dict[str, Any]) -> None:
        from devtools.etcd_process import find_etcd_binary

        certs = self.dir / "certs"
        members = [n for n in state["hosts"] if n.startswith("etcd")]
        initial = ",".join(f"{n}=https://{state['hosts'][n]['addr']}:{PEER_PORT}" for n in members)
        tls = [
            "--cert-file", str(certs / "server.crt"), "--key-file", str(certs / "server.key"),
            "--trusted-ca-file", str(certs / "ca.crt"), "--client-cert-auth",
            "--peer-cert-file", str(certs / "server.crt"), "--peer-key-file", str(certs / "server.key"),
            "--peer-trusted-ca-file", str(certs / "ca.crt"), "--peer-client-cert-auth",
        ]  # fmt: skip
        for n in members:
            addr = state["hosts"][n]["addr"]
            self._spawn(state, n, [
                find_etcd_binary(), "--name", n, "--data-dir", str(self.dir / f"{n}.data"),
                "--listen-client-urls", f"https://{addr}:{CLIENT_PORT}",
                "--advertise-client-urls", f"https://{addr}:{CLIENT_PORT}",
                "--listen-peer-urls", f"https://{addr}:{PEER_PORT}",
                "--initial-advertise-peer-urls", f"https://{addr}:{PEER_PORT}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--heartbeat-interval", "100", "--election-timeout", "1000", *tls,
            ])  # fmt: skip

    def endpoints(self, state: dict[str, Any]) -> list[str]:
        return [
            f"{h['addr']}:{CLIENT_PORT}" for n, h in state["hosts"].items() if n.startswith("etcd")
        ]

    def etcd_config(self, state: dict[str, Any], role: str) -> dict[str, Any]:
        """The ``etcd:`` section for ``role`` (master or worker)."""
        certs = self.dir / "certs"
        return {
            "endpoints": self.endpoints(state), "prefix": PREFIX,
            "ca_file": str(certs / "ca.crt"), "cert_file": str(certs / f"{role}.crt"),
            "key_file": str(certs / f"{role}.key"), "username": f"etcron-{role}",
            "password_file": str(self.dir / "secrets" / f"etcron-{role}.password"),
        }  # fmt: skip

    async def _auth(self, state: dict[str, Any]) -> None:
        from scheduler.config import EtcdConfig
        from scheduler.etcd.client import EtcdClient, EtcdError
        from scheduler.roles import create_roles

        secret_dir = self.dir / "secrets"
        secret_dir.mkdir(mode=0o700, exist_ok=True)
        passwords = {
            u: secrets.token_urlsafe(18) for u in ("root", "etcron-master", "etcron-worker")
        }
        for user, pw in passwords.items():
            path = secret_dir / f"{user}.password"
            path.write_text(pw + "\n")
            path.chmod(0o600)
        cfg = self.etcd_config(state, "master")
        cfg.update(username=None, password_file=None, connect_timeout=3, request_timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                client = await EtcdClient.connect(EtcdConfig.model_validate(cfg))
                await client.revision()
                break
            except EtcdError:
                if time.monotonic() > deadline:
                    raise SystemExit("netns-cluster: etcd did not come up within 60 s") from None
                await asyncio.sleep(0.3)
        try:
            auth = client.raw.auth
            await auth.user_add("root", passwords["root"])
            await auth.role_add("root")
            await auth.user_grant_role("root", "root")
            await create_roles(auth, PREFIX)
            for role in ("etcron-master", "etcron-worker"):
                await auth.user_add(role, passwords[role])
                await auth.user_grant_role(role, role)
            await auth.auth_enable()
        finally:
            await client.close()

    def _secrets(self, state: dict[str, Any]) -> None:
        """The API token, and the signing key pair when this etcron signs jobs."""
        token = self.dir / "secrets" / "api.token"
        token.write_text(secrets.token_urlsafe(32) + "\n")
        token.chmod(0o600)
        if _has_setting("master", "signing_key_file"):
            subprocess.run(
                [str(Path(sys.executable).with_name("etcron")), "keygen", "--out",
                 str(self.dir / "signing")],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip

    def config_of(self, state: dict[str, Any], name: str) -> dict[str, Any]:
        role = "master" if name.startswith("master") else "worker"
        addr = state["hosts"][name]["addr"]
        certs, keys = self.dir / "certs", self.dir / "signing"
        cfg: dict[str, Any] = {"etcd": self.etcd_config(state, role), "log": {"format": "json"}}
        if role == "master":
            master: dict[str, Any] = {
                "listen": f"{addr}:{API_PORT}",
                "token_file": str(self.dir / "secrets" / "api.token"),
            }
            if _has_setting("master", "tls_cert_file"):
                master.update(
                    tls_cert_file=str(certs / "server.crt"), tls_key_file=str(certs / "server.key")
                )
            if _has_setting("master", "signing_key_file"):
                master["signing_key_file"] = str(keys / "signing.key")
            cfg["master"] = master
        else:
            worker: dict[str, Any] = {
                "id": name, "labels": {"host": name}, "lease_ttl": 3, "lease_margin": 0.5,
                "listen": f"{addr}:8071", "log_dir": str(self.dir / f"{name}.output"),
            }  # fmt: skip
            if _has_setting("worker", "trusted_key_files"):
                worker["trusted_key_files"] = [str(keys / "signing.pub")]
            cfg["worker"] = worker
        return cfg

    def _daemon(self, state: dict[str, Any], name: str) -> None:
        import yaml

        path = self.dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(self.config_of(state, name), sort_keys=False))
        path.chmod(0o600)
        kind = "master" if name.startswith("master") else "worker"
        etcron = str(Path(sys.executable).with_name("etcron"))
        self._spawn(state, name, [etcron, kind, "--config", str(path)])

    def server(self, state: dict[str, Any], master: str = "master0") -> str:
        scheme = "https" if _has_setting("master", "tls_cert_file") else "http"
        return f"{scheme}://{state['hosts'][master]['addr']}:{API_PORT}"

    async def _wait_ready(self, state: dict[str, Any], timeout: float = 90) -> None:
        """Every master answers its health check; every worker is registered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = self.not_ready(state)
            if not missing:
                return
            await asyncio.sleep(0.5)
        raise SystemExit(f"netns-cluster: not ready within {timeout:.0f} s: {missing}")

    def not_ready(self, state: dict[str, Any]) -> list[str]:
        import httpx

        out = [n for n, pid in state["pids"].items() if not _alive(pid)]
        ca = str(self.dir / "certs" / "ca.crt")
        for name in state["hosts"]:
            if name.startswith("master"):
                url = self.server(state, name) + "/v1/health"
                try:
                    if httpx.get(url, verify=ca, timeout=2).status_code != 200:
                        out.append(name)
                except httpx.HTTPError:
                    out.append(name)
        if out:
            return out
        token = (self.dir / "secrets" / "api.token").read_text().strip()
        try:
            resp = httpx.get(
                self.server(state) + "/v1/workers", verify=ca, timeout=2,
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            ids = {w["id"] for w in resp.json().get("workers", [])}
        except (httpx.HTTPError, ValueError):
            ids = set()
        return [n for n in state["hosts"] if n.startswith("worker") and n not in ids]

    # status and down -----------------------------------------------------------

    def status(self) -> list[str]:
        state = self.load()
        lines = []
        for name, host in state["hosts"].items():
            pid = state["pids"].get(name)
            alive = "up" if pid and _alive(pid) else "down"
            lines.append(f"{name:<8} {host['ns']:<12} {host['addr']:<15} pid {pid}  {alive}")
        lines.append(f"server   {self.server(state)}  (CA {self.dir / 'certs' / 'ca.crt'})")
        lines.append(f"token    {self.dir / 'secrets' / 'api.token'}")
        return lines

    def down(self) -> None:
        if not self.state_file.exists():
            return
        state = self.load()
        for pid in state["pids"].values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for ns in state["namespaces"]:
            for word in _ip("netns", "pids", ns, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(word), signal.SIGKILL)
            _ip("netns", "delete", ns, check=False)
        if Path(f"/sys/class/net/{state['bridge']}").exists():
            _ip("link", "delete", state["bridge"], check=False)
        self.state_file.unlink()

    # faults --------------------------------------------------------------------

    def link(self, name: str, up: bool) -> None:
        state = self.load()
        _ip("-n", state["hosts"][name]["ns"], "link", "set", "eth0", "up" if up else "down")


def _has_setting(section: str, name: str) -> bool:
    from scheduler.config import MasterConfig, WorkerConfig

    model = MasterConfig if section == "master" else WorkerConfig
    return name in model.model_fields


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netns-cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "link-down", "link-up"])
    parser.add_argument("host", nargs="?", help="for link-down/link-up: e.g. worker1")
    parser.add_argument("--dir", type=Path, default=ROOT / "run" / "netns-cluster")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    if args.command == "up":
        cluster.up()
        print("\n".join(cluster.status()))
    elif args.command == "status":
        print("\n".join(cluster.status()))
    elif args.command == "down":
        cluster.down()
        print(f"netns-cluster: down ({args.dir})")
    else:
        if not args.host:
            parser.error(f"{args.command} needs a HOST")
        cluster.link(args.host, up=args.command == "link-up")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
