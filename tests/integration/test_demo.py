"""``make demo`` (deploy/local-cluster.sh): it shows runs, refuses a second demo on
the same directory, and a SIGTERM stops the cluster and ends the script."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_stops_on_sigterm_and_refuses_a_second_demo(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCRON_", "DEMO_"))}
    env |= {
        "DEMO_DIR": str(tmp_path / "run"),
        "ETCD_PORT": str(_free_port()),
        "API_PORT": str(_free_port()),
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    }
    proc = subprocess.Popen(
        ["bash", "deploy/local-cluster.sh"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("their last and next runs" in line for line in lines), timeout=90)
        second = subprocess.run(
            ["bash", "deploy/local-cluster.sh"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "another demo is running" in second.stderr
        assert proc.poll() is None, "the second demo disturbed the first"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    if proc.stdout is not None:
        proc.stdout.close()
    text = "".join(lines)
    assert code == 143, text[-2000:]
    # the lines to paste into a second terminal, as the README shows them
    assert f"export ETCRON_SERVER=http://127.0.0.1:{env['API_PORT']} ETCRON_TOKEN=" in text
    assert "etcron logs -f hello --all-runs" in text
    after = text[text.index("stopping the local cluster") :]
    assert "== stopped" in after
    assert "cannot reach" not in after and "Traceback" not in after
    assert "their last and next runs" not in after, "the loop went on after the signal"
